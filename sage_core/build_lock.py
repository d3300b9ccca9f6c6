"""A build lock left by a killed compile of one of DeepSpeed's ops.

torch compiles an extension under a lock file (``<extensions dir>/<op>/lock``) and every other process
that needs the op waits until that file is gone, without a timeout or a message. A build killed
part-way (a timed-out job, Ctrl-C during the first ``sage doctor``) leaves the file behind, and every
later run would hang before its first step. The compile takes about a minute, so a lock much older
than that has no live owner: :func:`check_build_locks` names it and how to remove it instead of
waiting forever. A younger one is left alone (another process may be building right now).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .defs.errors import ModelError

__all__ = ["STALE_AFTER_S", "extensions_root", "stale_locks", "check_build_locks"]

# DeepSpeed's CPU op compiles in about 50 s on a 2-core machine (docs/install.md); 15 minutes leaves
# room for a loaded machine and is still far below any real wait.
STALE_AFTER_S = 15 * 60


def extensions_root() -> Path:
    """Where torch builds extensions: ``TORCH_EXTENSIONS_DIR``, else torch's default cache folder."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    from torch.utils.cpp_extension import get_default_build_root  # lazy: torch's build helpers, only here

    return Path(get_default_build_root())


def stale_locks(root: Path, *, now: float | None = None,
                stale_after: float = STALE_AFTER_S) -> list[tuple[Path, float]]:
    """(lock file, age in seconds) of every lock under ``root`` older than ``stale_after``: ``<op>/lock``
    (``TORCH_EXTENSIONS_DIR`` set) and ``<python-and-device>/<op>/lock`` (torch's default layout)."""
    now = time.time() if now is None else now
    found = []
    for lock in sorted([*root.glob("*/lock"), *root.glob("*/*/lock")]):
        try:
            age = now - lock.stat().st_mtime
        except FileNotFoundError:  # its build just finished
            continue
        if age > stale_after:
            found.append((lock, age))
    return found


def check_build_locks(root: Path | None = None) -> None:
    """Raise :class:`ModelError` naming each stale build lock (and how to remove it), before DeepSpeed
    would wait on one forever."""
    stale = stale_locks(extensions_root() if root is None else root)
    if stale:
        names = ", ".join(f"{lock} ({age / 60:.0f} min old)" for lock, age in stale)
        raise ModelError(f"stale build lock: {names}: a compile of this op was killed and left its lock, so "
                         f"DeepSpeed would wait for it forever; remove it (rm {' '.join(str(p) for p, _ in stale)}) "
                         f"and run again (the op rebuilds in about a minute)")
