"""The single writer of sweep results: a driver-side Tune callback -> ``analysis.ResultStore``.

Every reported result becomes one row keyed ``(sweep_id, trial_id, step, "text")``. The status
column says what happened to the trial at that row: ``running`` for an intermediate evaluation,
``finished`` for its last one, ``pruned`` when the scheduler stopped it there, ``failed`` (with
``error``) on its last row when it ran out of retries. A status change rewrites the same key (the
store keeps the newest write per key), so a row is never duplicated, also after a retry or a
resumed driver re-reports a step.

The driver's event loop never waits on a Parquet write per result: rows go to a
:class:`~sweeps.store_writer.WriteBehind` thread that writes them in batches. Flushes: when a trial
ends (started, not awaited), before Tune saves its experiment state (awaited: what a resumed sweep
counts as processed is in the store) and at the experiment's end (awaited).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.store import KEY_COLUMNS, ResultStore

from .resolved_trial import ResolvedTrial, TrialResolver, hyperparameter_columns
from .search import FINAL_KEY
from .store_writer import WriteBehind

__all__ = ["StoreCallback", "result_row", "hyperparameter_columns", "BOOKKEEPING_KEYS"]

# Reported keys that are bookkeeping (Tune's or ours), not metrics.
BOOKKEEPING_KEYS = frozenset({
    "step", "total_steps", "epoch", FINAL_KEY, "trial_wall_s", "trial_device_s", "done", "trial_id",
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date", "pid", "hostname",
    "node_ip", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint",
    "experiment_tag", "config", "checkpoint_path",
})


def result_row(*, sweep_id: str, trial: ResolvedTrial, result: Mapping[str, Any], status: str,
               code_version: str, checkpoint: str | None = None) -> dict[str, Any]:
    """One results-store row from one Tune result of a resolved trial."""
    row: dict[str, Any] = {"sweep_id": sweep_id, "trial_id": trial.trial_id, "step": int(result["step"]),
                           "fidelity": "text", "status": status}
    row.update(trial.columns)
    for key, value in result.items():
        if key in BOOKKEEPING_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        row[key] = float(value)  # what the trainer reports it used wins (concept_guidance_scale)
    row["total_steps"] = int(result.get("total_steps", 0)) or None
    row["wall_s"] = float(result.get("trial_wall_s", result.get("time_total_s", 0.0)))
    row["device_s"] = float(result.get("trial_device_s", row["wall_s"]))
    row["code_version"] = code_version
    row["checkpoint"] = checkpoint
    return row


try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover
    _TuneCallback = object  # type: ignore[assignment,misc]


class StoreCallback(_TuneCallback):
    """Writes every trial result to ``ResultStore(results_root)`` exactly once per key."""

    def __init__(self, *, results_root: str, sweep_id: str, base: Mapping[str, Any],
                 variants: Mapping[str, Mapping[str, Any]] | None = None, code_version: str = "unknown",
                 resolver: TrialResolver | None = None):
        self.results_root = results_root
        self.sweep_id = sweep_id
        self.resolver = resolver if resolver is not None else TrialResolver(base=base, variants=variants)
        self.code_version = code_version
        self.last_rows: dict[str, dict[str, Any]] = {}
        self._store: ResultStore | None = None
        self._writer: WriteBehind | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_writer": None}

    @property
    def base(self) -> dict[str, Any]:
        return self.resolver.base

    def resolved(self, trial: Any) -> ResolvedTrial:
        """The trial resolved once (when Tune starts it, else at its first result), by trial id."""
        return self.resolver(trial)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.resolved(trial)

    @property
    def store(self) -> ResultStore:
        if self._store is None:
            self._store = ResultStore(self.results_root)
        return self._store

    @property
    def writer(self) -> WriteBehind:
        if self._writer is None:
            self._writer = WriteBehind(self.store, key=lambda row: tuple(row[k] for k in KEY_COLUMNS))
        return self._writer

    def _put(self, trial: Any, row: dict[str, Any]) -> None:
        self.writer.put([row])
        self.last_rows[trial.trial_id] = row

    def flush(self) -> None:
        """Return once every row handed over so far is in the store (raises a failed write)."""
        if self._writer is not None:
            self._writer.flush(wait=True)

    def _row(self, trial: Any, result: Mapping[str, Any], status: str) -> dict[str, Any]:
        return result_row(sweep_id=self.sweep_id, trial=self.resolved(trial), result=result, status=status,
                          code_version=self.code_version,
                          # Multi-worker trials report their Ray Train checkpoint's path with the metrics.
                          checkpoint=result.get("checkpoint_path") or None)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "step" not in result:
            return
        if result.get(FINAL_KEY):
            status = "finished"
        elif result.get("done"):
            status = "pruned"  # the scheduler (or a stopper) ended it before its last step
        else:
            status = "running"
        self._put(trial, self._row(trial, result, status))

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Tune registers a reported checkpoint after on_trial_result: fill in the row's path.
        row = self.last_rows.get(trial.trial_id)
        path = getattr(checkpoint, "path", None)
        if row is None or not path or row.get("checkpoint") == str(path):
            return
        self._put(trial, {**row, "checkpoint": str(path)})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = _error_text(trial)
        row = self.last_rows.get(trial.trial_id)
        if row is None:
            last = getattr(trial, "last_result", None) or {}
            if "step" in last:
                row = self._row(trial, last, "failed")
            else:
                row = self._row(trial, {"step": 0}, "failed")
        self._put(trial, {**row, "status": "failed", "error": reason})
        self.writer.flush(wait=False)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._writer is not None:
            self._writer.flush(wait=False)  # start writing now; awaited before the next experiment state

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def get_state(self) -> dict[str, Any]:
        # Tune saves this with its experiment state, which a resumed sweep restarts from: every
        # result counted there must be in the store first (results after it are re-reported).
        self.flush()
        return {"last_rows": json.loads(json.dumps(self.last_rows, default=str))}

    def set_state(self, state: dict) -> None:
        self.last_rows = dict(state.get("last_rows", {}))


def _error_text(trial: Any) -> str:
    """The last line of the trial's error (``TrialError: ...``), not the whole traceback."""
    for attr in ("error_file", "error_filename"):
        path = getattr(trial, attr, None)
        if path and Path(str(path)).is_file():
            lines = [ln for ln in Path(str(path)).read_text(errors="replace").splitlines() if ln.strip()]
            for ln in reversed(lines):
                if "Error" in ln or "Exception" in ln:
                    return ln.strip()[:500]
            return (lines[-1] if lines else "unknown error")[:500]
    err = getattr(trial, "error_msg", None) or getattr(trial, "get_error", lambda: None)()
    return str(err).strip().splitlines()[-1][:500] if err else "unknown error"
