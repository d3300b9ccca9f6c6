"""Prompt sets: the packaged CSVs (CC BY-NC 4.0, credit DES) and any CSV with a ``prompt`` column."""

from __future__ import annotations

import csv
import json
import os
from importlib import resources
from pathlib import Path

from .defs.errors import DataError
from .defs.locations import BUILTIN_PROMPT_SETS

__all__ = ["prompt_set_path", "load_prompts", "PROMPTS_DIR", "DATA_DIR"]

#: The package's data folder (prompt sets, probe bank, minimal pairs, proximal prompts).
DATA_DIR = Path(str(resources.files("sage_core") / "data"))
PROMPTS_DIR = DATA_DIR / "prompts"



def prompt_set_path(name_or_path: str | Path) -> Path:
    """Resolve a built-in prompt-set name or a CSV path; raise :class:`DataError` if neither."""
    key = str(name_or_path)
    if key in BUILTIN_PROMPT_SETS:
        return PROMPTS_DIR / BUILTIN_PROMPT_SETS[key]
    path = Path(key).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(BUILTIN_PROMPT_SETS))
        raise DataError(f"prompt set {key!r}: no such file, and not a built-in set (built-in: {known})")
    return path


def load_prompts(name_or_path: str | Path, *, limit: int | None = None) -> list[str]:
    """Read the ``prompt`` column of a CSV (other columns ignored), keeping rows as written.

    Raises :class:`DataError` for a missing file, a file without a ``prompt`` column, an empty
    prompt or an empty set. ``limit`` keeps the first N rows.
    """
    path = prompt_set_path(name_or_path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "prompt" not in reader.fieldnames:
                cols = ", ".join(reader.fieldnames or []) or "none"
                raise DataError(f"{path}: no 'prompt' column (columns: {cols}); "
                                "a prompt file is a CSV with a header row and a 'prompt' column")
            prompts: list[str] = []
            for line_no, row in enumerate(reader, start=2):
                text = row["prompt"]
                if text is None or text.strip() == "":
                    raise DataError(f"{path}: empty prompt on line {line_no}")
                prompts.append(text)
                if limit is not None and len(prompts) >= limit:
                    break
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if not prompts:
        raise DataError(f"{path}: no prompts (the file has a header but no rows)")
    return prompts


def read_json_data(path: str | os.PathLike | None, *, default: Path, field: str, maker: str) -> object:
    """A packaged data file (``default`` when ``path`` is None) parsed as JSON. :class:`DataError`
    names the config ``field`` for a missing file (and the ``tools/<maker>.py`` of a source checkout
    that makes one) and the file for one that is not readable JSON."""
    path = Path(path).expanduser() if path else default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(f"{field}={str(path)!r}: no such file; leave it unset for the packaged one "
                        f"or make one with `python tools/{maker}.py --out PATH` in a source checkout") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None
