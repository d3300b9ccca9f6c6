"""Paths a user gives (``--out``, ``--plot``, ``--storage``, RESULTS, TARGET, SPEC), checked before
any model loads or any work starts; one line naming the option, the path and what is wrong.

- :func:`check_path`: a path the operating system can name. A name longer than the file system
  allows (``NAME_MAX``, 255 bytes on most) makes every ``stat`` raise ``OSError``; it is named here
  instead.
- :func:`output_dir` / :func:`output_file`: the output folder is created now and a file is written
  and removed in it, so a folder that only looks writable (``/proc`` as root, a read-only mount, a
  full disk) is refused before the work, not after it. What was created is removed again when the
  command then fails while it is still empty (a failed run's own files are kept).
- :func:`check_writable_folder`: the same test for validation only (``sage sweep validate``), which
  leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sage_core.defs.errors import ConfigError

__all__ = ["check_path", "check_arg", "output_dir", "output_file", "check_writable_folder", "shown"]

_SHOWN = 120  # characters of a path shown in a message


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` for a one-line message: a very long one keeps its start and end."""
    text = os.fspath(path)
    return text if len(text) <= _SHOWN else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def _limit(path: Path, name: str, default: int) -> int:
    """``pathconf`` of the nearest folder of ``path`` that exists (file systems differ)."""
    for folder in (path, *path.parents):
        try:
            if folder.is_dir():
                return os.pathconf(folder, name)
        except (OSError, ValueError):
            continue
    return default


def _os_problem(label: str, path: Path, exc: OSError) -> ConfigError:
    if exc.errno == errno.ENAMETOOLONG:
        name_max = _limit(path, "PC_NAME_MAX", 255)
        longest = max(path.parts, key=lambda p: len(os.fsencode(p)))
        if len(os.fsencode(longest)) > name_max:
            return ConfigError(f"{label}: the name '{shown(longest)[:40]}...' is {len(os.fsencode(longest))} bytes "
                               f"long; the file system allows at most {name_max} per file or folder name")
        path_max = _limit(path, "PC_PATH_MAX", 4096)
        return ConfigError(f"{label}: the path is {len(os.fsencode(str(path)))} bytes long; the file system "
                           f"allows at most {path_max}")
    return ConfigError(f"{label}: {exc.strerror or exc}")


def check_path(path: str | os.PathLike[str], *, option: str, label: str | None = None) -> Path:
    """``path`` (user folder expanded) if the operating system can name it; it need not exist."""
    text = os.fspath(path)
    label = label or f"{option} {shown(text) or repr(text)}"
    if not text.strip():
        raise ConfigError(f"{option} '': an empty path; give a file or folder")
    if "\x00" in text:
        raise ConfigError(f"{label}: a path cannot contain a NUL character")
    out = Path(text).expanduser()
    try:
        out.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # need not exist; a file in the way of a folder is named where it matters
    except OSError as exc:
        raise _os_problem(label, out, exc) from None
    return out


def check_arg(value: str, *, option: str) -> str:
    """A command-line path argument that may also be a URI (``s3://...``, left to pyarrow) or a
    name (``quickstart``, ``minilm``): returned as given once the operating system can name it."""
    return value if "://" in value else str(check_path(value, option=option))


def _make_folder(out: Path, *, label: str) -> list[Path]:
    """Create ``out`` and its missing parents; the ones created, outermost first."""
    missing: list[Path] = []
    anchor = out
    while not anchor.exists() and anchor != anchor.parent:
        missing.insert(0, anchor)
        anchor = anchor.parent
    if not anchor.is_dir():
        what = "exists and is not a folder" if anchor == out else f"'{shown(anchor)}' is a file, not a folder"
        raise ConfigError(f"{label}: {what}; give a folder (it is created if missing)")
    created: list[Path] = []
    for folder in missing:
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to remove
        except OSError as exc:
            _remove_empty(created)
            raise ConfigError(f"{label}: not writable: cannot create folder '{shown(folder)}' "
                              f"({exc.strerror or exc}); pick a folder you can write") from None
        created.append(folder)
    return created


def _probe(folder: Path, *, label: str) -> None:
    """Write and remove a file in ``folder``: the only test that cannot be fooled."""
    try:
        fd, name = tempfile.mkstemp(prefix=".sage-write-check-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{label}: not writable: cannot write in folder '{shown(folder)}' "
                          f"({exc.strerror or exc}); pick a folder you can write") from None


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: the command wrote something there, which stays


def _reserve(out: Path, *, label: str) -> list[Path]:
    created = _make_folder(out, label=label)
    try:
        _probe(out, label=label)
    except ConfigError:
        _remove_empty(created)
        raise
    return created


def check_writable_folder(path: str | os.PathLike[str], *, option: str, label: str | None = None) -> Path:
    """``path`` can be created (or exists) and written; nothing is left behind."""
    out = check_path(path, option=option, label=label)
    _remove_empty(_reserve(out, label=label or f"{option} {shown(out)}"))
    return out


@contextmanager
def output_dir(path: str | os.PathLike[str], *, option: str = "--out") -> Iterator[Path]:
    """The output folder, created and tested now; removed again (if still empty) when the body fails."""
    out = check_path(path, option=option)
    created = _reserve(out, label=f"{option} {shown(out)}")
    try:
        yield out
    except BaseException:
        _remove_empty(created)
        raise


@contextmanager
def output_file(path: str | os.PathLike[str] | None, *, option: str,
                suffixes: tuple[str, ...]) -> Iterator[Path | None]:
    """A file to write (None: no file asked for): a known suffix, not a folder, writable if it
    exists, its folder created and tested now like :func:`output_dir`'s."""
    if path is None:
        yield None
        return
    out = check_path(path, option=option)
    label = f"{option} {shown(out)}"
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"{label}: the file name must end in {', '.join(suffixes)}")
    if out.is_dir():
        raise ConfigError(f"{label}: is a folder; give a file name, e.g. {shown(out / ('plot' + suffixes[0]))}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"{label}: '{shown(out.parent)}' is a file, not a folder; pick a path under a folder")
    if out.exists():
        try:
            open(out, "ab").close()  # opened for appending, nothing written: the file is unchanged
        except OSError as exc:
            raise ConfigError(f"{label}: cannot write the file ({exc.strerror or exc})") from None
    created = _reserve(out.parent, label=label)
    try:
        yield out
    except BaseException:
        _remove_empty(created)
        raise
