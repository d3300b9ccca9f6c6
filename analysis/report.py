"""A static HTML report of a results dataset: opens from disk, no server, images beside it.

Sections: trial status counts per sweep; per fidelity the Pareto plot (paper rows overlaid where
they have the metrics), the front as a table with hypervolume and, when the rows carry a
``checkpoint`` column, each best trial's checkpoint path; per varied hyperparameter the ablation
table and its line plots.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path

from analysis.ablation import ABLATION_PARAMS, ablation_frame, hyperparameters, metric_order
from analysis.errors import QueryError
from analysis.pareto import DEFAULT_PAIRS, hypervolume, pareto_ranks
from analysis.store import ResultStore
from analysis.views import columns_of, connect, locate

__all__ = ["write_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#666;font-size:13px}"""
_PLOT_METRICS = ("asr", "asr_text", "tifa", "util_text", "spread_ratio", "jaccard")


def _table(df) -> str:
    return df.to_html(index=False, escape=True, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0)


def write_report(
    root: str | os.PathLike[str] | ResultStore,
    out_dir: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    defaults: dict[str, float] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (+ PNG plots beside it) for the dataset at ``root``; returns the HTML path."""
    out = Path(out_dir)
    store = locate(root)
    con = connect(store, skip_bad=skip_bad)  # a bad store is refused before the folder is made
    out.mkdir(parents=True, exist_ok=True)
    parts: list[str] = [
        f"<h1>sage-sweeps report</h1><p class=note>results: {html.escape(store.uri)} &middot; written "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>"
    ]
    if store.skipped:
        parts.append("<p class=note>skipped bad files: " + html.escape("; ".join(map(str, store.skipped))) + "</p>")
    try:
        cols = columns_of(con, "results")
        n_rows = con.sql("SELECT count(*) FROM results").fetchall()[0][0]
        if n_rows == 0:
            parts.append("<p>No results yet.</p>")
        else:
            parts += _status_section(con, cols)
            for fidelity, (x, y) in DEFAULT_PAIRS.items():
                parts += _pareto_section(con, cols, fidelity=fidelity, x=x, y=y, out=out)
            parts += _ablation_sections(con, cols, out=out, defaults=defaults)
    finally:
        con.close()
    page = out / "index.html"
    page.write_text(
        "<!doctype html><html><head><meta charset=utf-8><title>sage-sweeps report</title>"
        f"<style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>",
        encoding="utf-8",
    )
    return page


def _status_section(con, cols: list[str]) -> list[str]:
    if "status" in cols:
        df = con.sql(
            "SELECT sweep_id, status, count(*) AS trials FROM (SELECT sweep_id, trial_id, "
            "arg_max(status, step) AS status FROM results GROUP BY sweep_id, trial_id) GROUP BY ALL ORDER BY ALL"
        ).df()
    else:
        df = con.sql("SELECT sweep_id, count(DISTINCT trial_id) AS trials FROM results GROUP BY ALL ORDER BY ALL").df()
    return ["<h2>Trials</h2><p class=note>status of each trial's last reported step</p>", _table(df)]


def _pareto_section(con, cols: list[str], *, fidelity: str, x: str, y: str, out: Path) -> list[str]:
    if x not in cols or y not in cols:
        return []
    ranked = pareto_ranks(con, x=x, y=y, fidelity=fidelity)
    if ranked.empty:
        return []
    from analysis.plots import pareto_plot

    front = ranked[ranked["front"] == 1]
    reported = con.sql("SELECT * FROM reported").df()
    image = pareto_plot(ranked, front, x=x, y=y, path=out / f"pareto_{fidelity}.png", reported=reported,
                        title=f"{fidelity} level: {y} vs {x}")
    hv = hypervolume(front, x=x, y=y)
    show = [c for c in ("sweep_id", "trial_id", "step", "method", x, y) if c in front.columns]
    show += [h for h in hyperparameters(list(ranked.columns)) if ranked[h].nunique(dropna=True) > 1]
    if "checkpoint" in front.columns:
        show.append("checkpoint")
    return [
        f"<h2>Pareto front, {fidelity} level ({html.escape(x)} vs {html.escape(y)})</h2>",
        f'<img src="{image.name}" alt="Pareto plot, {fidelity} level">',
        f"<p class=note>{len(ranked)} trials (last step each), {len(front)} on the front; hypervolume "
        f"against the trials' nadir: {hv:.4g}."
        + (" Stars: the paper's reported rows (source='reported')." if x in reported and y in reported else "")
        + "</p>",
        "<h3>Best trials (front 1)</h3>",
        _table(front[show]),
    ]


def _ablation_sections(con, cols: list[str], *, out: Path, defaults) -> list[str]:
    parts: list[str] = []
    known = hyperparameters(cols)
    for param in [p for p in ABLATION_PARAMS if p in known]:
        try:
            distinct = con.sql(f'SELECT count(DISTINCT "{param}") FROM results').fetchall()[0][0]
        except Exception:  # noqa: BLE001 - a column DuckDB cannot count is simply not varied
            continue
        if distinct < 2:
            continue
        parts.append(f"<h2>Ablation: {html.escape(param)}</h2>")
        try:
            table = ablation_frame(con, param=param, defaults=defaults)
        except QueryError as exc:
            parts.append(f"<p class=note>no table: {html.escape(str(exc))}</p>")
            continue
        if table[param].dtype.kind in "if" and len(table) > 1:
            from analysis.plots import ablation_plot

            metrics = [m for m in metric_order(list(table.columns)) if m in _PLOT_METRICS]
            image = ablation_plot(table, param=param, metrics=metrics, path=out / f"ablation_{param}.png")
            parts.append(f'<img src="{image.name}" alt="ablation plots for {html.escape(param)}">')
        notes = table.attrs.get("notes") or []
        if notes:
            parts.append("<p class=note>others: " + html.escape("; ".join(notes)) + "</p>")
        parts.append(_table(table))
    return parts
