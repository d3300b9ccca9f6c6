"""Output paths of the CLI, checked before any model loads or any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from sage_core.errors import ConfigError

__all__ = ["check_output_dir", "check_output_file"]


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_creatable(path: Path, *, option: str) -> None:
    """``path`` does not exist yet: its nearest existing ancestor must be a folder we can write."""
    anchor = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not anchor.is_dir():
        raise ConfigError(f"{option} {path}: '{anchor}' is a file, not a folder; pick a path under a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: folder '{anchor}' is not writable; pick a folder you can write")


def check_output_dir(path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """A folder to write into: an existing writable folder, or one that can be created."""
    text = os.fspath(path)
    if not text.strip():
        raise ConfigError(f"{option} '': an empty path is not a folder; give one, e.g. {option} runs/x")
    out = Path(text).expanduser()
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{option} {out}: exists and is not a folder; give a folder (it is created if missing)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {out}: folder is not writable; pick a folder you can write")
        return out
    _check_creatable(out, option=option)
    return out


def check_output_file(path: str | os.PathLike[str], *, option: str, suffixes: tuple[str, ...]) -> Path:
    """A file to write: not a folder, a known suffix, under a folder that exists or can be created."""
    text = os.fspath(path)
    if not text.strip():
        raise ConfigError(f"{option} '': an empty path is not a file name")
    out = Path(text).expanduser()
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {out}: the file name must end in {', '.join(suffixes)}")
    if out.is_dir():
        raise ConfigError(f"{option} {out}: is a folder; give a file name, e.g. {out / ('plot' + suffixes[0])}")
    if out.exists():
        if not os.access(out, os.W_OK):
            raise ConfigError(f"{option} {out}: file is not writable")
        return out
    parent = out.parent
    if parent.exists():
        if not parent.is_dir():
            raise ConfigError(f"{option} {out}: '{parent}' is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {out}: folder '{parent}' is not writable")
        return out
    _check_creatable(parent, option=option)
    return out
