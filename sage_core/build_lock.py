"""A build lock left by a killed compile of DeepSpeed's CPU communication op.

On a CPU, DeepSpeed compiles its shared-memory communication op (``deepspeed_shm_comm``) the first time
a process group starts, under a lock file in torch's extensions folder, and every other process that
needs the op waits until that file is gone, without a timeout or a message. A build killed part-way (a
timed-out job, Ctrl-C during the first ``sage doctor``) leaves the file behind, and every later run would
hang before its first step. That compile takes about a minute and torch never refreshes the lock while
it builds, so a lock much older than that has no live owner: :func:`check_build_locks` names it and how
to remove it instead of waiting forever. A younger one is left alone (another process may be building
it right now). Only the folder this interpreter and torch build would use is looked at, the way torch
picks it (``TORCH_EXTENSIONS_DIR``, else ``<torch's cache>/py<version>_<cpu|cuXYZ|rocmXYZ>``), and only
the op this project makes DeepSpeed build; on a GPU DeepSpeed builds no op on these paths.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .defs.errors import ModelError

__all__ = ["STALE_AFTER_S", "OPS", "extensions_dir", "stale_locks", "check_build_locks"]

# DeepSpeed's CPU op compiles in about 50 s on a 2-core machine (docs/install.md); 15 minutes leaves
# room for a loaded machine and is still far below any real wait.
STALE_AFTER_S = 15 * 60
# The ops DeepSpeed compiles on the paths this project runs (the CPU accelerator's communication op;
# the trainer's optimizer is torch's AdamW, so no optimizer op is built).
OPS = ("deepspeed_shm_comm",)


def extensions_dir() -> Path:
    """The folder torch builds this interpreter's extensions in (torch.utils.cpp_extension's rule)."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env is not None:
        return Path(env)
    import torch  # lazy: torch (~1 s), only to name the build folder as torch does
    from torch.utils.cpp_extension import get_default_build_root  # lazy: torch's build helpers, only here

    if torch.version.hip is not None:
        accelerator = f"rocm{torch.version.hip.replace('.', '')}"
    elif torch.version.cuda is not None:
        accelerator = f"cu{torch.version.cuda.replace('.', '')}"
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}_{accelerator}"


def stale_locks(folder: Path, *, ops: tuple[str, ...] = OPS, now: float | None = None,
                stale_after: float = STALE_AFTER_S) -> list[tuple[Path, float]]:
    """(lock file, age in seconds) of each op's ``<folder>/<op>/lock`` older than ``stale_after``."""
    now = time.time() if now is None else now
    found = []
    for op in ops:
        lock = folder / op / "lock"
        try:
            age = now - lock.stat().st_mtime
        except FileNotFoundError:  # no build, or its build just finished
            continue
        if age > stale_after:
            found.append((lock, age))
    return found


def check_build_locks(folder: Path | None = None) -> None:
    """Raise :class:`ModelError` naming each stale build lock (and how to remove it), before DeepSpeed
    would wait on one forever."""
    stale = stale_locks(extensions_dir() if folder is None else folder)
    if stale:
        names = ", ".join(f"{lock} ({age / 60:.0f} min old)" for lock, age in stale)
        raise ModelError(f"stale build lock: {names}: a compile of DeepSpeed's CPU communication op was killed "
                         f"and left its lock, so DeepSpeed would wait for it forever; remove it "
                         f"(rm {' '.join(str(p) for p, _ in stale)}) and run again (the op rebuilds in about a "
                         f"minute)")
