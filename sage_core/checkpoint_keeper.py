"""Which checkpoints of a run stay on disk, and which one is known good.

A checkpoint is written after an optimiser step, before anyone knows whether its weights are
sound. It is *pending* until the next step's loss comes out finite; then it is the *last good*
one. When a loss is not finite the pending checkpoint (whose weights produced it) is deleted and
the error names the last good one. Pruning keeps the newest ``keep`` checkpoints and the last good.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .checkpoint import list_checkpoints

__all__ = ["CheckpointKeeper"]


class CheckpointKeeper:
    """Bookkeeping for the checkpoints of one run folder (``run_dir/checkpoints/step_*``)."""

    def __init__(self, run_dir: Path, *, keep: int, resume_from: Path | None = None):
        self.run_dir = run_dir
        self.keep = keep
        self.latest: Path | None = resume_from  # the newest complete checkpoint of this run
        self.last_good: Path | None = resume_from  # its weights gave a finite loss
        self.pending: Path | None = None  # written, not yet confirmed by a finite loss

    def path_for(self, step: int) -> Path:
        return self.run_dir / "checkpoints" / f"step_{step:06d}"

    def written(self, path: Path) -> None:
        """``path`` is complete on disk: it is the newest, pending, and older ones beyond ``keep`` go."""
        for old in list_checkpoints(self.run_dir)[:-self.keep]:
            if old not in (path, self.last_good):
                shutil.rmtree(old, ignore_errors=True)
        self.latest = self.pending = path

    def loss_was_finite(self) -> None:
        """The weights of the pending checkpoint gave a finite loss: it becomes the last good one."""
        if self.pending is not None:
            self.last_good, self.pending = self.pending, None

    def loss_was_not_finite(self) -> str:
        """Drop the pending checkpoint; return the sentence an error gives about what is left."""
        if self.pending is not None:
            shutil.rmtree(self.pending, ignore_errors=True)
            self.pending = None
        if self.last_good is None:
            return "no checkpoint was good"
        return f"the last good checkpoint is {self.last_good} (resume from it with a lower lr)"
