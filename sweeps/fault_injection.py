"""Faults injected at a known point, for the fault-tolerance tests (instead of racing a kill).

Each fault is armed by a file: it strikes only while FILE exists, and deletes FILE first, so the
retried trial runs through. A trial reads its environment once, when it starts, and passes the
faults to the trainer as ordinary callbacks (``fault_callbacks``), calling their ``after_run`` hook
once the trainer has returned; nothing is read per step.
Unset (always, outside tests) they add nothing.

- ``SAGE_FAULT_KILL_AT="STEP:RANK:FILE"``: rank RANK SIGKILLs itself right after optimiser step STEP.
- ``SAGE_FAULT_ABORT_AFTER_FINAL="RANK:FILE"``: once the trainer has returned from a run whose
  final report went out (the work is done, the teardown too), rank RANK aborts (SIGABRT), as the
  native abort at interpreter exit of issue 27 did, before the trial function returns to Ray.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path

import torch.distributed as dist

from sage_core.trainer import TrainerCallback

__all__ = ["FAULT_ENV", "ABORT_AFTER_FINAL_ENV", "Fault", "KillAtStep", "AbortAfterFinalReport", "fault_callbacks"]

FAULT_ENV = "SAGE_FAULT_KILL_AT"
ABORT_AFTER_FINAL_ENV = "SAGE_FAULT_ABORT_AFTER_FINAL"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _disarm(armed: Path) -> bool:
    """True once: the first caller that finds the switch file removes it."""
    try:
        armed.unlink()
        return True
    except FileNotFoundError:
        return False


class Fault(TrainerCallback):
    """A trainer callback with one more hook: ``after_run``, which the trial calls once the trainer returned."""

    def after_run(self) -> None:
        """After ``Trainer.fit`` returned (its teardown done), before the trial function returns."""


class KillAtStep(Fault):
    def __init__(self, *, step: int, rank: int, armed: Path):
        self.step, self.rank, self.armed = step, rank, armed

    def on_step(self, info) -> None:
        if info.step == self.step and _rank() == self.rank and _disarm(self.armed):
            os.kill(os.getpid(), signal.SIGKILL)


class AbortAfterFinalReport(Fault):
    """Placed after the report callback, so its ``on_evaluate`` sees the final report gone out."""

    def __init__(self, *, rank: int, armed: Path):
        self.rank, self.armed = rank, armed
        self.final_reported = False

    def on_evaluate(self, info) -> None:
        # The rank is read here, while the group is up (the trainer may end it in its teardown).
        self.final_reported = info.step == info.total_steps and _rank() == self.rank

    def after_run(self) -> None:
        if self.final_reported and _disarm(self.armed):
            os.abort()


def fault_callbacks(env: Mapping[str, str] | None = None) -> list[Fault]:
    """The faults armed in ``env`` (default: this process's environment), as trainer callbacks."""
    env = os.environ if env is None else env
    faults: list[Fault] = []
    if env.get(FAULT_ENV):
        step, rank, armed = env[FAULT_ENV].split(":", 2)
        faults.append(KillAtStep(step=int(step), rank=int(rank), armed=Path(armed)))
    if env.get(ABORT_AFTER_FINAL_ENV):
        rank, armed = env[ABORT_AFTER_FINAL_ENV].split(":", 1)
        faults.append(AbortAfterFinalReport(rank=int(rank), armed=Path(armed)))
    return faults
