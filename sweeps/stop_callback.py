"""``sage sweep stop``: the driver-side Tune callback that polls ``<storage>/STOP``."""

from __future__ import annotations

import os
import signal
from typing import Any

from .spec import is_uri
from .storage_io import read_text

__all__ = ["StopFileCallback"]

try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover
    _TuneCallback = object  # type: ignore[assignment,misc]


class StopFileCallback(_TuneCallback):
    """Polls the stop file; when present, interrupts Tune the way Ctrl+C does (resumable)."""

    def __init__(self, *, stop_path: str, every: int | None = None):
        self.stop_path = stop_path
        # A local stat costs nothing, so look at every step of Tune's loop: a stop written while a
        # result is handled takes effect before the next one. On object storage a look is a request:
        # every 5th step.
        self.every = every or (5 if is_uri(stop_path) else 1)
        self.requested = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.requested or iteration % self.every:
            return
        if read_text(self.stop_path) is not None:
            self.requested = True
            # Tune's own SIGINT/SIGUSR1 handler: checkpoint the experiment and return from fit().
            os.kill(os.getpid(), signal.SIGUSR1)
