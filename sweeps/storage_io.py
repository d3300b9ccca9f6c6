"""Small files of a sweep folder on a local path or an object-storage URI (pyarrow filesystems)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from .spec import is_uri

__all__ = ["filesystem", "read_text", "write_text", "delete_file", "local_storage"]


def filesystem(path: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` of a local path or a URI."""
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path.removeprefix("file://")).expanduser().resolve())


def read_text(path: str) -> str | None:
    """The file's UTF-8 text; None when there is no such file."""
    fs, p = filesystem(path)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Written to a temporary name and renamed into place: a reader never sees half a file."""
    fs, p = filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    tmp = p + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode("utf-8"))
    fs.move(tmp, p)


def delete_file(path: str) -> None:
    fs, p = filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.File:
        fs.delete_file(p)


def local_storage(storage: str) -> str:
    """Absolute local path (Tune needs one) or the URI unchanged."""
    if is_uri(storage):
        return storage
    return str(Path(storage.removeprefix("file://")).expanduser().resolve())
