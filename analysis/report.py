"""A static HTML report of a results dataset: opens from disk, no server, images beside it.

Sections: how to read the page; trial status counts per sweep; per fidelity the Pareto plot
(points labelled by their varied hyperparameters, error bars from the bootstrap intervals, the
paper's reported rows as stars where they have the same fidelity's metrics) and the front table
(the labelled trials with their Pareto rank, hypervolume and, when the rows carry a
``checkpoint`` column, each trial's checkpoint path); when the rows hold a ``robust_*`` safety
objective (a spec with ``fidelity.robust``), the 3-objective front of safety, utility and safety
after the benign fine-tune (pairwise projections, and a table with the fine-tune's paired deltas
and the proximal-disruption objectives beside it); when the rows hold ``attack_depth`` (a spec with
``fidelity.attack``), the erasure depth under an optimised attack (:mod:`analysis.report_attack`);
learning curves of every graded text
objective per trial (a pruned trial's line stops at its rung, marked X); the reliability of each
objective (``analysis.reliability``: signal share over training seeds, rung-to-final tau, the
smallest difference it resolves); the calibration of the
text proxies against the image metrics (the stored ``calibration`` table, else computed from the
rows when trials have image rows); per varied hyperparameter the ablation table and its plots.
Metrics with bootstrap intervals show as ``0.612 [0.581, 0.640]`` (error bars in the plots).

The page is static: images beside it, no script, nothing fetched from a network; wide tables
scroll inside their own box, so the page itself fits the window.
"""

from __future__ import annotations

import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from analysis.ablation import ABLATION_PARAMS, ablation_frame, headline_metrics, hyperparameters
from analysis.calibration import calibration_display, calibration_table
from analysis.column_roles import roles_of
from analysis.pareto import DEFAULT_PAIRS, hypervolume, nadir, pareto_ranks
from analysis.plots import ablation_plot, front3_plot, learning_curves, pareto_plot
from analysis.reliability import COLUMNS_NOTE, low_signal_lines, reliability_table
from analysis.report_attack import attack_section
from analysis.report_parts import html_table, metric_notes, trial_labels, varied_columns
from analysis.store import ResultStore
from analysis.views import columns_of, connect, locate
from sage_core.defs.errors import QueryError
from sage_core.defs.metrics import DEFAULT_OBJECTIVES, objective_metrics

__all__ = ["write_report", "robust_fronts"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#f3f3f3}
table.front td:last-child{white-space:normal;overflow-wrap:anywhere;min-width:14em;text-align:left}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
.note{color:#666;font-size:13px}.howto{background:#f6f6f1;border-left:3px solid #bbb;padding:.4em 1em;font-size:14px}
dl.metrics{font-size:13px;color:#444}dl.metrics dt{font-weight:600}dl.metrics dd{margin:0 0 .3em 1.5em}"""
MAX_LABELLED = 15  # more candidates than this: only the front is labelled in the plot

_HOW_TO_READ = """<div class=howto><p><b>How to read this.</b> Each trial is one training run; its label
lists the hyperparameters that differ between trials. <b>Trials</b>: what happened to each (<em>pruned</em>: the
scheduler stopped it at a rung because enough others were ahead there). <b>Pareto front</b>: one point per trial at
its last evaluated step; the axis titles say which direction is better. A trial is on the front (rank 1) when no
other trial is at least as good in both objectives and better in one; dark labels mark the front, grey labels the
rest, and the front table lists every labelled trial. Bars and shaded bands are 95% bootstrap intervals over the
evaluation prompts: trials whose intervals overlap are not told apart by the data. Red stars are the paper's
reported numbers, drawn only where this page has the same metrics (image level). <b>Learning curves</b>: every
graded objective at every evaluation; an X marks where a pruned trial stopped. Text-level metrics are cheap
proxies; image-level ones (ASR, TIFA) are the truth, and the calibration section says how well the proxies
ranked the trials. <b>Ablations</b>: one hyperparameter varied, with the others as the notes say.</p></div>"""


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
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>", _HOW_TO_READ,
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
            parts += _robust_front_sections(con, cols, out=out)
            parts += attack_section(con, cols, out=out)
            parts += _curves_section(con, cols, out=out)
            parts += _reliability_section(con)
            parts += _calibration_section(con, cols)
            parts += _ablation_sections(con, cols, out=out, defaults=defaults)
    finally:
        con.close()
    page = out / "index.html"
    page.write_text(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>sage-sweeps report</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1"><link rel=icon href="data:,">'
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
    return ["<h2>Trials</h2><p class=note>status of each trial's last reported step</p>", html_table(df)]


def _pareto_section(con, cols: list[str], *, fidelity: str, x: str, y: str, out: Path) -> list[str]:
    if x not in cols or y not in cols:
        return []
    ranked = pareto_ranks(con, x=x, y=y, fidelity=fidelity)
    if ranked.empty:
        return []

    front = ranked[ranked["front"] == 1]
    shown = ranked if len(ranked) <= MAX_LABELLED else front
    labels = trial_labels(shown, varied=varied_columns(ranked, roles_of(con)))
    reported = con.sql("SELECT * FROM reported").df()
    if "fidelity" in reported.columns:  # reference markers only where the paper measured this fidelity
        reported = reported[reported["fidelity"] == fidelity]
    has_reported = x in reported and y in reported and bool(reported[[x, y]].notna().all(axis=1).any())
    image = pareto_plot(ranked, front, x=x, y=y, path=out / f"pareto_{fidelity}.png", reported=reported,
                        title=f"{fidelity} level: {y} vs {x}", labels=labels)
    hv = hypervolume(front, x=x, y=y, ref=nadir(ranked, x=x, y=y))
    table = shown.assign(label=labels)
    show = ["label", "front"] + [c for c in ("sweep_id", "trial_id", "step", "status", "method") if c in table.columns
                                 and (c not in ("sweep_id", "method") or table[c].nunique(dropna=True) > 1)]
    show += [c for m in (x, y) for c in (m, f"{m}_lo", f"{m}_hi") if c in table.columns]
    if "checkpoint" in table.columns:
        show.append("checkpoint")  # last: the one column that wraps (table.front td:last-child)
    data = html.escape(json.dumps([str(v) for v in labels]), quote=True)
    return [
        f"<h2>Pareto front, {fidelity} level ({html.escape(x)} vs {html.escape(y)})</h2>",
        f'<img src="{image.name}" alt="Pareto plot, {fidelity} level" data-labels="{data}">',
        f"<p class=note>{len(ranked)} trials (last step each), {len(front)} on the front; hypervolume "
        f"against the trials' nadir: {hv:.4g}."
        + (f" Labelled: {'every trial' if shown is ranked else f'the front (more than {MAX_LABELLED} trials)'}.")
        + (" Stars: the paper's reported rows (source='reported')." if has_reported else "")
        + (" [lo, hi]: 95% bootstrap intervals; the front ranks point estimates, so trials whose intervals "
           "overlap are not told apart by the data." if f"{x}_lo" in front.columns else "")
        + "</p>",
        metric_notes([x, y]),
        "<h3>Front table (front 1 = best; the trials the plot labels)</h3>",
        html_table(table[show]).replace("<table", f'<table class=front data-fidelity="{fidelity}"', 1),
    ]


def robust_fronts(cols: list[str]) -> list[tuple[str, str, str]]:
    """``(safety, utility, robust_<safety>)`` for each ``robust_*`` safety objective in ``cols`` whose
    safety metric is there too (``robust_concept_auc`` gives concept_auc, util_sib, robust_concept_auc)."""
    util = DEFAULT_OBJECTIVES[1]
    return [(m.removeprefix("robust_"), util, m) for m in objective_metrics("robust")
            if m in cols and m.removeprefix("robust_") in cols and util in cols]


def _robust_front_sections(con, cols: list[str], *, out: Path) -> list[str]:
    """Per robust safety objective: the 3-objective front (text level, each trial's last step)."""
    parts: list[str] = []
    for x, y, z in robust_fronts(cols):
        ranked = pareto_ranks(con, x=x, y=y, extra=z, fidelity="text" if "fidelity" in cols else None)
        if ranked.empty:
            continue

        front = ranked[ranked["front"] == 1]
        shown = ranked if len(ranked) <= MAX_LABELLED else front
        labels = trial_labels(shown, varied=varied_columns(ranked, roles_of(con)))
        image = front3_plot(ranked, objectives=(x, y, z), labels=labels, path=out / f"front3_{z}.png",
                            title=f"text level: {x}, {y}, {z}")
        hv = hypervolume(front, x=x, y=y, extra=z, ref=nadir(ranked, x=x, y=y, extra=z))
        more = [m for m in (f"{z}_delta", f"{z}_recovered", *objective_metrics("proximal")) if m in ranked.columns]
        table = shown.assign(label=labels)
        show = ["label", "front"] + [c for c in ("sweep_id", "trial_id", "step") if c in table.columns
                                     and (c != "sweep_id" or table[c].nunique(dropna=True) > 1)]
        show += [c for m in (x, y, z, *more) for c in (m, f"{m}_lo", f"{m}_hi") if c in table.columns]
        parts += [
            f"<h2>3-objective front, text level ({html.escape(x)}, {html.escape(y)}, {html.escape(z)})</h2>",
            f'<img src="{image.name}" alt="3-objective front: {html.escape(z)}">',
            f"<p class=note>{len(ranked)} trials (last step each), {len(front)} on the front (no other trial is "
            f"at least as good in all three objectives and better in one); hypervolume against the trials' "
            f"nadir: {hv:.4g}. The panels are projections: a blue point that looks dominated in one panel is "
            f"saved by the third objective. {html.escape(z)} is safety after a benign LoRA fine-tune of the "
            f"aligned encoder; its delta (after - before) has a paired-bootstrap interval; the proximal columns "
            f"say how far alignment moved benign prompts near the concept. [lo, hi]: 95% bootstrap intervals; "
            f"the front ranks point estimates.</p>",
            metric_notes([x, y, z, *more]),
            html_table(table[show]).replace("<table", f'<table class=front3 data-front3="{html.escape(z)}"', 1),
        ]
    return parts


def _curve_metrics(cols: list[str]) -> list[str]:
    """The default text pair first, then every other graded text objective the rows hold."""
    return [m for m in dict.fromkeys([*DEFAULT_PAIRS["text"], *objective_metrics("text")]) if m in cols]


def _curves_section(con, cols: list[str], *, out: Path) -> list[str]:
    """Learning curves per sweep: every graded text objective against the step, one line per trial."""
    metrics = _curve_metrics(cols)
    if not metrics or "step" not in cols:
        return []

    where = "fidelity = 'text' AND " if "fidelity" in cols else ""
    parts = ["<h2>Learning curves (text level)</h2>",
             "<p class=note>each graded text objective at every evaluation, one line per trial; bands: 95% "
             "bootstrap intervals; the marker at a line's end says how the trial ended (X: pruned there)</p>"]
    sweeps = [r[0] for r in con.sql(f"SELECT DISTINCT sweep_id FROM results WHERE {where}true ORDER BY 1").fetchall()]
    for i, sweep_id in enumerate(sweeps):
        rows = con.execute(f"SELECT * FROM results WHERE {where}sweep_id = ? ORDER BY trial_id, step",
                           [sweep_id]).df()
        firsts = rows.drop_duplicates("trial_id")
        varied = varied_columns(rows, roles_of(con))
        labels = dict(zip(firsts["trial_id"], trial_labels(firsts, varied=varied), strict=True))
        image = learning_curves(rows, metrics=metrics, labels=labels, path=out / f"curves_{i}.png",
                                title=f"sweep {sweep_id}")
        note = ""
        if "status" in rows.columns:
            last = rows.sort_values("step").groupby("trial_id").tail(1)
            pruned = last[last["status"] == "pruned"]
            if len(pruned):
                at = pruned.groupby("step")["trial_id"].count()
                note = ("<p class=note>pruned: " + html.escape(", ".join(
                    f"{n} trial{'s' * (n > 1)} at step {step}" for step, n in at.items())) + "</p>")
        parts += [f"<h3>sweep {html.escape(str(sweep_id))}</h3>",
                  f'<img src="{image.name}" alt="learning curves of sweep {html.escape(str(sweep_id))}">', note]
    return parts


def _reliability_section(con) -> list[str]:
    """Per objective: signal share over training seeds, rung-to-final agreement, resolution."""
    table = reliability_table(con)
    if table.empty:
        return []
    notes = [*low_signal_lines(table), *table.attrs.get("notes", [])]
    intro = ("<p class=note>Each trial's value at its final step, grouped by configuration (the seeds of a spec's "
             "<code>seeds: N</code> are repeats): how far a ranking by each objective can be trusted. "
             f"{html.escape(COLUMNS_NOTE)}.</p>")
    return ["<h2>Reliability of the objectives</h2>", intro, html_table(table),
            *(f"<p class=note>{html.escape(n)}</p>" for n in notes)]


def _calibration_section(con, cols: list[str]) -> list[str]:
    """The stored calibration tables, else one computed from the rows (trials with image rows)."""
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
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

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
        parts.append(f"<div class=scroll>{table.to_html(index=False, escape=True, border=0)}</div>")
    return parts


def _ablation_sections(con, cols: list[str], *, out: Path, defaults) -> list[str]:
    parts: list[str] = []
    roles = roles_of(con)
    known = hyperparameters(cols, roles)
    # The dimensions the sweep declared it varies; without its schema.json, the usual suspects.
    for param in [p for p in (roles.varied if roles is not None else ABLATION_PARAMS) if p in known]:
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
            metrics = headline_metrics(list(table.columns))
            image = ablation_plot(table, param=param, metrics=metrics, path=out / f"ablation_{param}.png")
            parts.append(f'<img src="{image.name}" alt="ablation plots for {html.escape(param)}">')
        notes = table.attrs.get("notes") or []
        if notes:
            parts.append("<p class=note>others: " + html.escape("; ".join(notes)) + "</p>")
        if table.attrs.get("set_by"):
            parts.append(f"<p class=note>set by each {html.escape(param)}: "
                         + html.escape(", ".join(table.attrs["set_by"])) + "</p>")
        parts.append(html_table(table))
    return parts
