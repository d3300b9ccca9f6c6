"""YAML that a hostile or broken file cannot turn into a hang, a memory blow-up or a traceback.

``yaml.safe_load`` already refuses Python objects; on top of it:

- files: a regular file of at most :data:`MAX_BYTES`, UTF-8 text;
- aliases: the document, with every alias expanded as a copy, may hold at most
  :data:`MAX_VALUES` values (a "billion laughs" document of a few hundred bytes expands to
  billions; pydantic, ``deepcopy`` and ``json.dumps`` would all expand it), and no alias may
  contain itself;
- mappings: keys are text, and a key given twice is an error (YAML would keep the last silently);
- nesting deeper than Python's recursion allows is an error, not a ``RecursionError``.

Every failure is a :class:`~sage_core.defs.errors.ConfigError` of one line naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["MAX_BYTES", "MAX_VALUES", "load_yaml_text", "read_yaml_file"]

MAX_BYTES = 1 << 20
MAX_VALUES = 100_000


class _KeyError(yaml.YAMLError):
    """A mapping key that is not text, or is repeated (the message says which and where)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse non-text and repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise _KeyError(f"line {line}: key {key!r} is not text; keys are names")
            if key in seen:
                raise _KeyError(f"line {line}: key {key!r} is given twice; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_values(data: Any, *, where: str) -> int:
    """How many values ``data`` holds once every alias is a copy; stops past :data:`MAX_VALUES`."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(x: Any) -> int:
        if not isinstance(x, (dict, list, set)):
            return 1
        key = id(x)
        if key in memo:
            return memo[key]
        if key in active:
            raise ConfigError(f"{where}: an alias refers to a value that contains it; remove the self-reference")
        active.add(key)
        n = 1
        for item in (x.items() if isinstance(x, dict) else x):
            n += sum(size(v) for v in item) if isinstance(x, dict) else size(item)
            if n > MAX_VALUES:
                raise ConfigError(f"{where}: its aliases expand to more than {MAX_VALUES:,} values; "
                                  "write the values out (or use fewer aliases)")
        active.discard(key)
        memo[key] = n
        return n

    return size(data)


def load_yaml_text(text: str, *, where: str) -> Any:
    """Parse ``text`` (bounded as above); ``where`` names it in errors, e.g. "config file 'x.yaml'"."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_BYTES // 1024} KiB; a config or spec is a few lines")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _KeyError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}:{at} not valid YAML ({' '.join(str(problem).split())})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None
    try:
        _expanded_values(data, where=where)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None
    return data


def read_yaml_file(path: str | os.PathLike[str], *, what: str) -> Any:
    """Read and parse a YAML file: a regular UTF-8 file of at most :data:`MAX_BYTES`."""
    p = Path(path)
    where = f"{what} file '{p}'"
    try:
        info = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ConfigError(f"{where}: is {kind}; give a YAML file")
    if info.st_size > MAX_BYTES:
        raise ConfigError(f"{where}: {info.st_size:,} bytes, larger than {MAX_BYTES // 1024} KiB; "
                          "a config or spec is a few lines")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_BYTES // 1024} KiB; a config or spec is a few lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    return load_yaml_text(text, where=where)
