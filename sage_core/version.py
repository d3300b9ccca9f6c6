"""Which code produced an artifact: package version plus the git commit when run from a checkout."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["code_version"]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    try:
        version = metadata.version("sage-sweeps")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            version += f"+g{sha}" + (".dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return version
