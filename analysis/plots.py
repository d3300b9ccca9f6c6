"""PNG plots for fronts and ablations (matplotlib's Agg canvas; pyplot and its global state unused)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analysis.metrics import lookup

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["pareto_plot", "ablation_plot", "reported_scale"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
) -> Path:
    """Scatter of all candidate ``points``, the ``front`` as a step line (one per group), and the
    paper's ``reported`` rows as labelled stars where they have both metrics. Returns ``path``."""
    fig = _figure(7.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    if len(points):
        ax.scatter(points[x], points[y], s=14, c="0.7", label=f"trials ({len(points)})", zorder=1)
    groups = [(None, front)] if by is None or by not in front.columns else list(front.groupby(by, dropna=False))
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
