"""``sage sweep status DIR`` / ``sage sweep stop DIR``: read a sweep folder, ask a driver to stop.

Status reads only files (``sweep.json``, ``spec.yaml``, the results store), so it works while the
driver runs, after it died, and from another machine that sees the storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from analysis.dominance import minimised_rows, nondominated_ranks, objective_signs
from analysis.intervals import fmt_cell, has_interval
from sage_core.defs.errors import StorageError

from .image_stage import final_text_rows
from .sweep_dir import SweepDir, driver_alive

__all__ = ["SweepStatus", "sweep_status", "current_front", "request_stop", "format_status", "driver_alive"]


@dataclass
class SweepStatus:
    storage: str
    sweep_id: str
    state: str
    objectives: list[tuple[str, str]]
    trials: dict[str, int]                      # running / finished / pruned / failed -> count
    front: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    image: list[dict[str, Any]] = field(default_factory=list)   # image-level rows of the survivors
    image_metrics: list[str] = field(default_factory=list)       # fidelity.image.metrics of the spec
    varied: list[str] = field(default_factory=list)              # the spec's search dimensions


def sweep_status(storage: str, *, skip_bad: bool = False) -> SweepStatus:
    """Trial counts by status (from each trial's newest row), the failures, the current front;
    ``skip_bad``: bad files of the results store are skipped with a warning instead of refused."""
    folder = SweepDir.at(storage)
    spec, meta = folder.load()
    rows = folder.rows(meta["sweep_id"], skip_bad=skip_bad)
    last = final_text_rows(rows)
    counts = {"running": 0, "finished": 0, "pruned": 0, "failed": 0}
    for row in last.values():
        counts[row.get("status") or "running"] = counts.get(row.get("status") or "running", 0) + 1
    metrics, modes = spec.objective_metrics(), spec.objective_modes()
    front = current_front(last.values(), metrics=metrics, modes=modes)
    failures = [{"trial_id": r["trial_id"], "step": r["step"], "error": r.get("error")}
                for r in last.values() if r.get("status") == "failed"]
    image = sorted((r for r in rows if r.get("fidelity") == "image"), key=lambda r: str(r["trial_id"]))
    state = meta["state"]
    if state == "running" and driver_alive(meta) is False:
        state = "interrupted: its driver is gone"
    return SweepStatus(storage=folder.root, sweep_id=meta["sweep_id"], state=state,
                       objectives=list(zip(metrics, modes, strict=True)), trials=counts, front=front, failures=failures,
                       rows=len(rows), image=image,
                       image_metrics=list(spec.fidelity.image.metrics) if spec.fidelity.image else [],
                       varied=list(spec.dimensions()))


def current_front(last: Iterable[dict[str, Any]], *, metrics: list[str], modes: list[str]) -> list[dict[str, Any]]:
    """The non-dominated rows among the finished trials' final rows (every trial's latest row while
    none has finished); a NaN objective counts as worst, a missing one leaves the row out."""
    last = list(last)
    pool = [r for r in last if r.get("status") == "finished"] or last
    pool = [r for r in pool if all(r.get(m) is not None for m in metrics)]
    ranks = nondominated_ranks(minimised_rows(pool, metrics=metrics, signs=objective_signs(metrics, modes)))
    return [r for r, rank in zip(pool, ranks, strict=True) if rank == 0]


def format_status(st: SweepStatus, *, varied: list[str] | None = None) -> str:
    """``varied``: the hyperparameter columns shown beside the front (default: the spec's dimensions)."""
    varied = st.varied if varied is None else varied
    lines = [f"sweep {st.sweep_id} ({st.state}) in {st.storage}",
             "trials: " + ", ".join(f"{n} {k}" for k, n in st.trials.items()) + f"; {st.rows} result rows"]
    metrics = [m for m, _ in st.objectives]
    if st.front:
        lines.append("current front (" + ", ".join(f"{mo} {me}" for me, mo in st.objectives) + "):")
        cols = ["trial_id", "step", *varied, *metrics]
        widths = [max(len(c), *(len(_cell(r, c)) for r in st.front)) for c in cols]
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for r in sorted(st.front, key=lambda r: r.get(metrics[0]) or 0):
            lines.append("  " + "  ".join(_cell(r, c).ljust(w) for c, w in zip(cols, widths, strict=True)))
        if any(has_interval(m, r) for m in metrics for r in st.front):
            lines.append("  [lo, hi]: 95% bootstrap intervals; the scheduler ranks point estimates, so trials "
                         "whose intervals overlap are not told apart by the data")
    if st.image_metrics or st.image:
        lines.append(f"image stage: {len(st.image)} image row(s)" + (":" if st.image else ""))
        for r in st.image:
            vals = ", ".join(f"{m} {_cell(r, m)}" for m in st.image_metrics if r.get(m) is not None)
            lines.append(f"  {r['trial_id']} step {r['step']}: {vals}")
    for f in st.failures:
        lines.append(f"failed: {f['trial_id']} at step {f['step']}: {f['error']}")
    if st.state.split(":")[0] in ("interrupted", "stopped", "failed"):
        lines.append(f"resume with: {SweepDir.at(st.storage).resume_command()}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _cell(row: dict[str, Any], name: str) -> str:
    """A metric with its bootstrap interval (``0.612 [0.581, 0.640]``) when the row carries one."""
    if has_interval(name, row) and row.get(name) is not None:
        return fmt_cell(row, name)
    return _fmt(row.get(name))


def request_stop(storage: str) -> str:
    """Write the stop file the driver polls; returns its path. Refused when sweep.json says no
    driver runs (finished, failed, interrupted, stopped): nobody would read the file."""
    folder = SweepDir.at(storage)
    _, meta = folder.load()
    state = meta.get("state")
    if state != "running":
        hint = ("; nothing to stop" if state == "finished"
                else f"; no driver is running, resume it with `{folder.resume_command()}`")
        raise StorageError(f"sweep {meta.get('sweep_id')} in {folder.root!r} is {state}{hint}")
    if driver_alive(meta) is False:
        raise StorageError(
            f"sweep {meta['sweep_id']} in {folder.root!r} is marked running, but its driver (pid "
            f"{meta.get('driver_pid')} on {meta.get('driver_host') or 'this machine'}) is gone: it was killed or "
            f"crashed, so nothing reads a stop request; resume it with `{folder.resume_command()}`")
    return folder.request_stop(meta["sweep_id"])
