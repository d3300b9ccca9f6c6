"""The two files that say what a sweep folder holds, read as untrusted input.

``sweep.json`` (sweep id, state, driver) and ``spec.yaml`` (the resolved spec) are written by the
driver, but a crash, a full disk or a hand edit can leave them truncated, empty or of the wrong
shape; ``status``, ``stop`` and ``resume`` then fail with one line naming the file and what is
wrong, never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from sage_core.defs.errors import ConfigError, StorageError

from .spec import spec_from_text
from .storage_io import filesystem

__all__ = ["STATES", "MAX_FILE_BYTES", "read_small_text", "parse_sweep_meta", "read_sweep_folder"]

STATES = ("running", "finished", "failed", "interrupted", "stopped")
MAX_FILE_BYTES = 4 << 20
_SWEEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def read_small_text(path: str) -> str | None:
    """UTF-8 text of a small file on a local path or URI; None when there is no such file."""
    fs, p = filesystem(path)
    try:
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type != pafs.FileType.File:
            raise StorageError(f"{path}: is not a regular file")
        if info.size is not None and info.size > MAX_FILE_BYTES:
            raise StorageError(f"{path}: {info.size:,} bytes, larger than {MAX_FILE_BYTES >> 20} MiB; not a file "
                               "sage wrote")
        with fs.open_input_stream(p) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StorageError(f"{path}: cannot be read ({exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{path}: not UTF-8 text (byte {exc.start}); the file is damaged") from None


def parse_sweep_meta(text: str, *, path: str) -> dict[str, Any]:
    """``sweep.json`` checked: an object with a valid ``sweep_id`` and a known ``state``."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is truncated or "
                           "damaged") from None
    if not isinstance(meta, dict):
        raise StorageError(f"{path}: expected a JSON object with sweep_id and state, got {type(meta).__name__}")
    sweep_id = meta.get("sweep_id")
    if not isinstance(sweep_id, str) or not _SWEEP_ID.match(sweep_id):
        raise StorageError(f"{path}: sweep_id={sweep_id!r} is not allowed (allowed: letters, digits, '.', '_', '-')")
    state = meta.get("state")
    if state not in STATES:
        raise StorageError(f"{path}: state={state!r} is not allowed (allowed: {', '.join(STATES)})")
    pid = meta.get("driver_pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise StorageError(f"{path}: driver_pid={pid!r} is not allowed (allowed: a process id > 0)")
    for key in ("driver_host", "started", "resumed"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise StorageError(f"{path}: {key}={meta[key]!r} is not allowed (allowed: text)")
    if meta.get("counts") is not None and not isinstance(meta["counts"], dict):
        raise StorageError(f"{path}: counts={meta['counts']!r} is not allowed (allowed: an object)")
    return meta


def read_sweep_folder(storage: str, *, spec_file: str, meta_file: str, scheduler_file: str | None = None):
    """``(spec, meta)`` of a sweep folder, both checked; one-line errors naming the file."""
    text, meta_text = read_small_text(spec_file), read_small_text(meta_file)
    if text is None or meta_text is None:
        raise StorageError(f"{storage!r} holds no sweep (no spec.yaml/sweep.json); start one with "
                           "`sage sweep run SPEC --storage DIR`")
    meta = parse_sweep_meta(meta_text, path=meta_file)
    try:
        spec = spec_from_text(text, where=f"saved spec {spec_file}")
    except ConfigError as exc:
        raise StorageError(f"{exc}; the sweep folder is damaged (it holds the spec the sweep ran with)") from None
    if scheduler_file and "://" not in scheduler_file and Path(scheduler_file).is_file():
        from .pareto_scheduler import read_state  # lazy: ray (~0.7 s), off `sage` start-up

        read_state(Path(scheduler_file))  # a resumed driver must not find it damaged after Ray started
    return spec, meta
