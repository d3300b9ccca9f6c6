"""A fault injected at a known step, for the fault-tolerance tests (instead of racing a kill).

``SAGE_FAULT_KILL_AT="STEP:RANK:FILE"`` in a trial's environment makes rank RANK of the trial
SIGKILL itself right after optimiser step STEP, once: only while FILE exists, and it deletes FILE
first, so the retried trial runs through. Unset (always, outside tests) it adds nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sage_core.trainer import TrainerCallback

__all__ = ["FAULT_ENV", "KillAtStep", "fault_callbacks"]

FAULT_ENV = "SAGE_FAULT_KILL_AT"


class KillAtStep(TrainerCallback):
    def __init__(self, *, step: int, rank: int, armed: Path):
        self.step, self.rank, self.armed = step, rank, armed

    def on_step(self, info) -> None:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if info.step == self.step and rank == self.rank and self.armed.exists():
            self.armed.unlink()
            os.kill(os.getpid(), signal.SIGKILL)


def fault_callbacks() -> list[TrainerCallback]:
    """``[KillAtStep(...)]`` when ``SAGE_FAULT_KILL_AT`` is set, else ``[]``."""
    value = os.environ.get(FAULT_ENV)
    if not value:
        return []
    step, rank, armed = value.split(":", 2)
    return [KillAtStep(step=int(step), rank=int(rank), armed=Path(armed))]
