"""``sage sweep stop``: the driver-side Tune callback that polls ``<storage>/STOP``."""

from __future__ import annotations

import os
import signal
from typing import Any

from .storage_io import read_text

__all__ = ["StopFileCallback"]

try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover
    _TuneCallback = object  # type: ignore[assignment,misc]


class StopFileCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """Polls the stop file; when present, interrupts Tune the way Ctrl+C does (resumable)."""

    def __init__(self, *, stop_path: str):
        self.stop_path = stop_path
        self.requested = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.requested or iteration % 5:
            return
        if read_text(self.stop_path) is not None:
            self.requested = True
            # Tune's own SIGINT/SIGUSR1 handler: checkpoint the experiment and return from fit().
            os.kill(os.getpid(), signal.SIGUSR1)
