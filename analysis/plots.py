"""PNG plots for fronts and ablations (matplotlib's Agg canvas; pyplot and its global state unused)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sage_core.defs.metrics import lookup

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["pareto_plot", "ablation_plot", "learning_curves", "reported_scale", "front3_plot"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib (~0.2 s), off `import analysis`
    from matplotlib.figure import Figure  # lazy: matplotlib (~0.2 s), off `import analysis`

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def reported_scale(measured: np.ndarray, reported: np.ndarray) -> float:
    """Factor that puts the paper's values on the measured scale: 0.01 when the paper writes
    percent points (values above 1.5) and every measured value is a fraction (at most 1.5)."""
    m = np.abs(measured[~np.isnan(measured)])
    r = np.abs(reported[~np.isnan(reported)])
    if len(m) and len(r) and m.max() <= 1.5 < r.max():
        return 0.01
    return 1.0


def _arrow(name: str) -> str:
    m = lookup(name)
    if m is None:
        return name
    how = (f"best at {m.target:g}" if m.direction == "target"
           else "lower is better" if m.direction == "minimize" else "higher is better")
    return f"{name} ({how})"


def _bounds(df: pd.DataFrame, name: str) -> np.ndarray | None:
    """``[2, n]`` distances below/above each value to its bootstrap bounds (matplotlib's ``yerr``),
    or None when ``df`` has no ``<name>_lo``/``<name>_hi`` columns."""
    lo, hi = f"{name}_lo", f"{name}_hi"
    if lo not in df.columns or hi not in df.columns:
        return None
    v = df[name].to_numpy(float)
    err = np.vstack([v - df[lo].to_numpy(float), df[hi].to_numpy(float) - v])
    return np.where(np.isnan(err), 0.0, np.clip(err, 0.0, None))


def pareto_plot(
    points: pd.DataFrame,
    front: pd.DataFrame,
    *,
    x: str,
    y: str,
    path: str | Path,
    by: str | None = None,
    reported: pd.DataFrame | None = None,
    title: str | None = None,
    labels: pd.Series | None = None,
) -> Path:
    """Scatter of all candidate ``points``, the ``front`` as a step line (one per group), and the
    paper's ``reported`` rows as labelled stars where they have both metrics. ``labels`` (text
    per row of ``points``, same index) are written beside the points. Returns ``path``."""
    fig = _figure(7.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    if len(points):
        ax.scatter(points[x], points[y], s=14, c="0.7", label=f"trials ({len(points)})", zorder=1)
        xerr, yerr = _bounds(points, x), _bounds(points, y)
        if xerr is not None or yerr is not None:
            ax.errorbar(points[x], points[y], xerr=xerr, yerr=yerr, fmt="none", ecolor="0.8", elinewidth=0.6,
                        zorder=0)
    groups: list[tuple[Any, pd.DataFrame]] = ([(None, front)] if by is None or by not in front.columns
                                              else list(front.groupby(by, dropna=False)))
    for value, part in groups:
        part = part.sort_values(x)
        label = "Pareto front" if value is None else f"front {by}={value}"
        lines = ax.plot(part[x], part[y], marker="o", ms=5, lw=1.5, drawstyle="steps-post", label=label, zorder=3)
        xerr, yerr = _bounds(part, x), _bounds(part, y)
        if xerr is not None or yerr is not None:  # the front's bootstrap intervals
            ax.errorbar(part[x], part[y], xerr=xerr, yerr=yerr, fmt="none", ecolor=lines[0].get_color(),
                        elinewidth=0.8, capsize=2, alpha=0.7, zorder=2)
    if reported is not None and x in reported.columns and y in reported.columns:
        rep = reported.dropna(subset=[x, y])
        if len(rep):
            sx = reported_scale(points[x].to_numpy(float) if len(points) else np.array([]), rep[x].to_numpy(float))
            sy = reported_scale(points[y].to_numpy(float) if len(points) else np.array([]), rep[y].to_numpy(float))
            note = " (paper %, scaled to fractions)" if (sx, sy) != (1.0, 1.0) else ""
            ax.scatter(rep[x] * sx, rep[y] * sy, marker="*", s=90, c="tab:red", label="reported" + note, zorder=4)
            for _, row in rep.iterrows():
                ax.annotate(str(row["method"]), (row[x] * sx, row[y] * sy), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    if labels is not None:
        _label_points(ax, points, labels, x=x, y=y)
    ax.set_xlabel(_arrow(x))
    ax.set_ylabel(_arrow(y))
    ax.set_title(title or f"{y} vs {x}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _label_points(ax, points: pd.DataFrame, labels: pd.Series, *, x: str, y: str) -> None:
    """Each label beside its point, dark on the front (``front == 1``) and grey elsewhere; to the
    left of points in the right part of the axes so the text stays inside them."""
    lo, hi = ax.get_xlim()
    at = points.loc[labels.index]
    xs, ys = at[x].to_numpy(dtype=float), at[y].to_numpy(dtype=float)
    darks = (at["front"] == 1).to_numpy() if "front" in at.columns else np.ones(len(at), dtype=bool)
    for text, px, py, dark in zip(labels, xs, ys, darks, strict=True):
        right = hi > lo and (px - lo) / (hi - lo) > 0.55
        ax.annotate(str(text), (px, py), fontsize=6.5, xytext=(-4 if right else 4, 4), textcoords="offset points",
                    ha="right" if right else "left", color="0.1" if dark else "0.45", zorder=5)


def ablation_plot(table: pd.DataFrame, *, param: str, metrics: Sequence[str], path: str | Path) -> Path:
    """One small plot per metric against the values of ``param`` (rows of an ablation table): a line
    over numeric values, points over named ones (variants); bootstrap intervals as error bars."""
    metrics = [m for m in metrics if m in table.columns and table[m].notna().any()][:6]
    numeric = table[param].dtype.kind in "iuf"
    xs = table[param] if numeric else table[param].astype(str)
    n = max(len(metrics), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = _figure(3.4 * cols, 2.7 * rows)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.errorbar(xs, table[metric], yerr=_bounds(table, metric), marker="o", capsize=3,
                    linestyle="-" if numeric else "none")
        ax.set_xlabel(param)
        if not numeric:
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_ylabel(_arrow(metric), fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"ablation over {param}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


_END_MARKERS = {"finished": ("o", "finished"), "pruned": ("X", "pruned: stopped at its rung"),
                "failed": ("x", "failed"), "running": (">", "still running")}


def learning_curves(rows: pd.DataFrame, *, metrics: Sequence[str], labels: Mapping[str, str],
                    path: str | Path, title: str | None = None) -> Path:
    """One panel per metric: each trial's value against the training step (``rows``: one row per
    trial and step with ``trial_id``, ``step``, ``status`` and the metrics), bootstrap intervals
    as a band, and the trial's last step marked by how it ended (a pruned trial's line stops at
    the rung that pruned it, marked X). ``labels``: trial_id -> legend text."""
    from matplotlib.lines import Line2D  # lazy: matplotlib (~0.2 s), off `import analysis`

    metrics = [m for m in metrics if m in rows.columns and rows[m].notna().any()]
    n = max(len(metrics), 1)
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    trials = list(dict.fromkeys(rows["trial_id"]))
    legend_rows = (min(len(trials), 12) + 3 + 3) // 4  # trial lines (at most 12) and up to 3 end markers, 4 a row
    legend_h = 0.22 * legend_rows + 0.2
    fig = _figure(3.6 * cols, 2.5 * nrows + 0.5 + legend_h)
    colors = [f"C{i % 10}" for i in range(len(trials))]
    ends: set[str] = set()
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, cols, k + 1)
        for trial, color in zip(trials, colors, strict=True):
            mine = rows[(rows["trial_id"] == trial) & rows[metric].notna()].sort_values("step")
            if mine.empty:
                continue
            steps = mine["step"].to_numpy(float)
            ax.plot(steps, mine[metric].to_numpy(float), color=color, lw=1.2, marker=".", ms=4)
            lo, hi = f"{metric}_lo", f"{metric}_hi"
            if lo in mine.columns and hi in mine.columns:
                ax.fill_between(steps, mine[lo].to_numpy(float), mine[hi].to_numpy(float), color=color, alpha=0.12,
                                lw=0)
            status = str(mine["status"].iloc[-1]) if "status" in mine.columns else "finished"
            marker = _END_MARKERS.get(status, ("s", status))[0]
            ends.add(status)
            ax.plot(steps[-1:], mine[metric].to_numpy(float)[-1:], linestyle="none", marker=marker, ms=8,
                    color=color, markeredgecolor="black", markeredgewidth=0.8, zorder=4)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(_arrow(metric), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=c, lw=1.5, label=labels.get(t, t))
               for t, c in zip(trials, colors, strict=True)][:12]
    handles += [Line2D([], [], color="0.3", linestyle="none", marker=_END_MARKERS.get(s, ("s", s))[0],
                       markeredgecolor="black", label=_END_MARKERS.get(s, ("s", s))[1]) for s in sorted(ends)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    fig.suptitle(title or "learning curves")
    fig.tight_layout(rect=(0, legend_h / (2.5 * nrows + 0.5 + legend_h), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def front3_plot(points: pd.DataFrame, *, objectives: Sequence[str], path: str | Path,
                labels: pd.Series | None = None, title: str | None = None) -> Path:
    """A 3-objective front as its three pairwise projections: every candidate in ``points`` (with the
    ``front`` rank of :func:`analysis.pareto.pareto_ranks`), the front (rank 1 in all three objectives)
    in colour and the rest grey, bootstrap intervals as error bars, ``labels`` beside the points.
    A point off the front in one projection may be on it in 3-D: another objective saves it."""
    x, y, z = objectives
    fig = _figure(12.0, 4.3)
    on = points["front"] == 1 if "front" in points.columns else np.ones(len(points), dtype=bool)
    for k, (a, b) in enumerate(((x, y), (x, z), (y, z))):
        ax = fig.add_subplot(1, 3, k + 1)
        for part, color, name in ((points[~on], "0.65", "dominated"), (points[on], "tab:blue", "3-objective front")):
            if len(part):
                ax.errorbar(part[a], part[b], xerr=_bounds(part, a), yerr=_bounds(part, b), fmt="o", ms=5,
                            color=color, ecolor=color, elinewidth=0.7, capsize=2, alpha=0.9,
                            label=f"{name} ({len(part)})", zorder=3 if color != "0.65" else 2)
        if labels is not None:
            _label_points(ax, points, labels, x=a, y=b)
        ax.set_xlabel(_arrow(a), fontsize=8)
        ax.set_ylabel(_arrow(b), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"3-objective front: {x}, {y}, {z}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
