"""The Pareto scheduler's state file (``scheduler_state.json``): written when Tune saves its
experiment state (:class:`SchedulerStateCallback`), read back checked (:func:`read_state`) by a
resumed driver and ``sage sweep status``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sage_core.defs.errors import StorageError

try:
    from ray.tune import Callback
except ImportError:  # pragma: no cover - ray is a dependency of sweeps
    Callback = object  # type: ignore[assignment,misc]

__all__ = ["read_state", "SchedulerStateCallback", "state_callbacks"]


def read_state(path: Path) -> tuple[dict[int, dict[str, list[float]]], dict[str, int]]:
    """Rung records and pruned trials from a state file, checked; one line naming the file when
    it is truncated, not UTF-8 or of the wrong shape (a resumed driver must not guess)."""
    def bad(why: str) -> StorageError:
        return StorageError(f"{path}: {why}; the scheduler state is damaged: move it away to let the resumed "
                            "sweep re-record its rungs")

    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    if not isinstance(state, dict):
        raise bad(f"expected an object with recorded and pruned, got {type(state).__name__}")
    raw_recorded, raw_pruned = state.get("recorded", {}), state.get("pruned", {})
    if not isinstance(raw_recorded, dict) or not isinstance(raw_pruned, dict):
        raise bad("recorded and pruned must be objects")
    recorded: dict[int, dict[str, list[float]]] = {}
    for rung, rows in raw_recorded.items():
        if not str(rung).isdigit() or not isinstance(rows, dict):
            raise bad(f"rung {rung!r}: expected a step and an object of trial -> objective values")
        for trial, vec in rows.items():
            if not isinstance(vec, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                    for x in vec):
                raise bad(f"rung {rung}, trial {trial!r}: expected a list of numbers, got {vec!r}")
        recorded[int(rung)] = {str(t): [float(x) for x in v] for t, v in rows.items()}
    pruned: dict[str, int] = {}
    for trial, rung in raw_pruned.items():
        if isinstance(rung, bool) or not isinstance(rung, int) or rung < 0:
            raise bad(f"pruned[{trial!r}]={rung!r}: expected the step it was stopped at")
        pruned[str(trial)] = rung
    return recorded, pruned


def _read_widths(path: Path) -> dict[int, dict[str, list[float]]]:
    """The interval half-widths a noise-aware scheduler mirrored (:func:`read_state` has already
    checked that the file is valid JSON). A file without them (written with ``noise_aware`` off) or
    an entry that is not a list of numbers gives no widths: those trials count as points (width 0)."""
    raw = json.loads(path.read_text(encoding="utf-8")).get("widths", {})
    out: dict[int, dict[str, list[float]]] = {}
    for rung, rows in (raw.items() if isinstance(raw, dict) else ()):
        if str(rung).isdigit() and isinstance(rows, dict):
            out[int(rung)] = {str(t): [float(x) for x in v] for t, v in rows.items()
                              if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                             for x in v)}
    return out


class SchedulerStateCallback(Callback):
    """Writes a Pareto scheduler's state file when Tune saves its experiment state.

    Tune calls ``get_state`` of every run callback from ``TuneController.save_to_dir`` (every
    experiment-state save, the forced one at the end of ``fit`` included), right after it has
    written the trial states; nothing is returned, so Tune keeps no copy of its own. Pass the same
    scheduler object to ``TuneConfig`` and here: ``tuner.pkl`` pickles both in one go, so a resumed
    Tuner's callback still holds the scheduler the resumed Tuner uses.
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        # From now on the scheduler leaves writing to Tune's saves; one used without this callback
        # writes its file at every decision.
        scheduler.saved_by_tune = True

    def get_state(self) -> dict | None:
        self.scheduler.write_state()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.scheduler.write_state()


def state_callbacks(scheduler: Any) -> list[Any]:
    """The run callbacks that save ``scheduler``'s state with Tune's experiment state (none for a
    scheduler without a state file, e.g. FIFO)."""
    return [SchedulerStateCallback(scheduler)] if hasattr(scheduler, "write_state") else []
