"""A static HTML report of a results dataset: opens from disk, no server, images beside it.

Sections: trial status counts per sweep; per fidelity the Pareto plot (paper rows overlaid where
they have the metrics), the front as a table with hypervolume and, when the rows carry a
``checkpoint`` column, each best trial's checkpoint path; the calibration of the text proxies
against the image metrics (the stored ``calibration`` table, else computed from the rows when
trials have image rows); per varied hyperparameter the ablation table and its plots. Metrics
with bootstrap intervals show as ``0.612 [0.581, 0.640]`` (error bars in the plots).
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path

from analysis.ablation import ABLATION_PARAMS, ablation_frame, headline_metrics, hyperparameters
from analysis.errors import QueryError
from analysis.intervals import interval_frame
from analysis.pareto import DEFAULT_PAIRS, hypervolume, nadir, pareto_ranks
from analysis.store import ResultStore
from analysis.views import columns_of, connect, locate

__all__ = ["write_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#666;font-size:13px}"""


def _table(df) -> str:
    """HTML of ``df``; a column with ``_lo``/``_hi`` columns beside it as ``value [lo, hi]``."""
    return interval_frame(df).to_html(index=False, escape=True, border=0)


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
            parts += _calibration_section(con, cols)
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
    hv = hypervolume(front, x=x, y=y, ref=nadir(ranked, x=x, y=y))
    show = [c for c in ("sweep_id", "trial_id", "step", "method") if c in front.columns]
    show += [c for m in (x, y) for c in (m, f"{m}_lo", f"{m}_hi") if c in front.columns]
    show += [h for h in hyperparameters(list(ranked.columns)) if ranked[h].nunique(dropna=True) > 1]
    if "checkpoint" in front.columns:
        show.append("checkpoint")
    return [
        f"<h2>Pareto front, {fidelity} level ({html.escape(x)} vs {html.escape(y)})</h2>",
        f'<img src="{image.name}" alt="Pareto plot, {fidelity} level">',
        f"<p class=note>{len(ranked)} trials (last step each), {len(front)} on the front; hypervolume "
        f"against the trials' nadir: {hv:.4g}."
        + (" Stars: the paper's reported rows (source='reported')." if x in reported and y in reported else "")
        + (" [lo, hi]: 95% bootstrap intervals; the front ranks point estimates, so trials whose intervals "
           "overlap are not told apart by the data." if f"{x}_lo" in front.columns else "")
        + "</p>",
        "<h3>Best trials (front 1)</h3>",
        _table(front[show]),
    ]


def _calibration_section(con, cols: list[str]) -> list[str]:
    """The stored calibration tables, else one computed from the rows (trials with image rows)."""
    from analysis.calibration import calibration_display, calibration_table

    stored = con.sql("SELECT * FROM calibration ORDER BY sweep_id").df()
    entries = stored.astype(object).where(stored.notna(), None).to_dict("records")
    where = "stored by the image stage"
    if not entries and "fidelity" in cols:
        n_image = con.sql("SELECT count(*) FROM results WHERE fidelity = 'image'").fetchall()[0][0]
        if not n_image:
            return []
        for (sweep_id,) in con.sql("SELECT DISTINCT sweep_id FROM results WHERE fidelity = 'image' "
                                   "ORDER BY ALL").fetchall():
            rows = con.execute("SELECT * FROM results WHERE sweep_id = ?", [sweep_id]).df()
            rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
            entries += calibration_table(rows)
        where = "computed from the rows (no stored table)"
    if not entries:
        return []
    import pandas as pd

    parts = ["<h2>Calibration: text proxies vs image metrics</h2>",
             f"<p class=note>{where}. Kendall's tau-b and Spearman's rho over the trials with image rows, with 95% "
             "bootstrap intervals; <em>final</em>: the text row of the checkpoint the images came from; "
             "<em>early</em>: each trial's first rung row (what the scheduler pruned with). expected: the sign a "
             "faithful proxy shows.</p>"]
    for sweep_id in dict.fromkeys(e["sweep_id"] for e in entries):
        mine = [e for e in entries if e["sweep_id"] == sweep_id]
        table = pd.DataFrame(calibration_display(mine))
        steps = {e["text_at"]: e.get("text_steps") for e in mine}
        parts.append(f"<h3>sweep {html.escape(str(sweep_id))}</h3><p class=note>text steps: "
                     + html.escape(", ".join(f"{k} {v}" for k, v in steps.items() if v)) + "</p>")
        parts.append(table.to_html(index=False, escape=True, border=0))
    return parts


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
        if len(table) > 1:
            from analysis.plots import ablation_plot

            metrics = headline_metrics(list(table.columns))
            image = ablation_plot(table, param=param, metrics=metrics, path=out / f"ablation_{param}.png")
            parts.append(f'<img src="{image.name}" alt="ablation plots for {html.escape(param)}">')
        notes = table.attrs.get("notes") or []
        if notes:
            parts.append("<p class=note>others: " + html.escape("; ".join(notes)) + "</p>")
        if table.attrs.get("set_by"):
            parts.append(f"<p class=note>set by each {html.escape(param)}: "
                         + html.escape(", ".join(table.attrs["set_by"])) + "</p>")
        parts.append(_table(table))
    return parts
