"""The report's erasure-depth section (rows from a spec with ``fidelity.attack``).

An optimised attack (``sage_core.evaluation.attack``) edits each attack prompt against the aligned
encoder until the frozen image model's space reads the concept again. Per trial, at its last step
with an attack: ``attack_depth`` (share of the attack prompts NOT brought back within the budget,
with its bootstrap interval) and ``attack_steps_median``; a plot of the success curves
(``attack_recovered_at_<t>``: share brought back within t steps, one line per trial); and, when the
sweep ranked by ``attack_depth``, a note on its multi-objective front with each trial's rank on it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.column_roles import roles_of
from analysis.intervals import fmt_number
from analysis.pareto import pareto_ranks
from analysis.plots import _figure
from analysis.report_parts import html_table, metric_notes, trial_labels, varied_columns

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["attack_section", "curve_columns", "last_attacked"]

DEPTH = "attack_depth"
CURVE = "attack_recovered_at_"


def curve_columns(cols: list[str]) -> list[str]:
    """The success-curve columns of ``cols`` in step order (``attack_recovered_at_0``, ``_1``, ...)."""
    steps = [c for c in cols if c.startswith(CURVE) and c.removeprefix(CURVE).isdigit()]
    return sorted(steps, key=lambda c: int(c.removeprefix(CURVE)))


def last_attacked(con: duckdb.DuckDBPyConnection, cols: list[str]) -> pd.DataFrame:
    """Each trial's row at its last step with an attack (``attack_depth`` measured: neither NULL nor
    NaN, which the steps between the attack's mark), text level, ordered by sweep and trial."""
    where = "fidelity = 'text' AND " if "fidelity" in cols else ""
    return con.sql(
        f"SELECT * FROM results WHERE {where}{DEPTH} IS NOT NULL AND NOT isnan(CAST({DEPTH} AS DOUBLE)) "
        "QUALIFY row_number() OVER (PARTITION BY sweep_id, trial_id ORDER BY step DESC) = 1 "
        "ORDER BY sweep_id, trial_id").df()


def success_curves(rows: pd.DataFrame, *, steps: list[str], labels: pd.Series, path: Path) -> Path:
    """Share of the attack prompts brought back within t steps against t, one line per row (trial)."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    budget = [int(c.removeprefix(CURVE)) for c in steps]
    for i, (label, (_, row)) in enumerate(zip(labels, rows.iterrows(), strict=True)):
        # later lines thinner and dashed: trials with the same curve stay visible on top of each other
        ax.plot(budget, row[steps].to_numpy(float), color=f"C{i % 10}", lw=2.8 - 0.5 * (i % 4), marker=".",
                ms=5, linestyle=("-", "--", ":", "-.")[i % 4], drawstyle="steps-post",
                label=f"{label} (step {fmt_number(row['step'])})")
    ax.set_xlabel("attack step (budget spent)", fontsize=8)
    ax.set_ylabel("share recovered within t steps (lower is safer)", fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(budget)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.suptitle("success curves of the optimised attack (each trial at its last attacked step)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _front_note(con, *, objectives: list[str], rows: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The note on the sweep's front over its objectives, and ``rows`` with each trial's rank on it."""
    x, y, *extra = objectives
    ranked = pareto_ranks(con, x=x, y=y, extra=extra, fidelity="text" if "fidelity" in rows.columns else None)
    rows = rows.merge(ranked[["sweep_id", "trial_id", "front"]], on=["sweep_id", "trial_id"], how="left")
    names = ", ".join(objectives)
    note = (f"<p class=note>This sweep ranks by {len(objectives)} objectives ({html.escape(names)}): "
            f"{DEPTH} stands beside safety on the fixed prompt sets and utility. On their front at each "
            f"trial's last step: {int((ranked['front'] == 1).sum())} of {len(ranked)} trials (column front, "
            f"1 = best: no other trial is at least as good in every objective and better in one; "
            f"<code>sage pareto</code> with <code>--extra {DEPTH}</code> prints the same front).</p>")
    return note, rows


def attack_section(con, cols: list[str], *, out: Path) -> list[str]:
    """The section's HTML parts, or none when the rows hold no ``attack_depth``."""
    if DEPTH not in cols:
        return []
    rows = last_attacked(con, cols)
    if rows.empty:
        return []
    roles = roles_of(con)
    labels = trial_labels(rows, varied=varied_columns(rows, roles))
    steps = curve_columns(list(rows.columns))
    parts = ["<h2>Erasure depth under an optimised attack</h2>",
             "<p class=note>Each attack prompt (one the base encoder reads as the concept) is edited by an attack "
             "optimised against the trial's aligned encoder until the frozen image model's space reads the concept "
             f"again. Per trial, at its last step with an attack: {DEPTH}, the share NOT brought back within the "
             "budget (higher is safer; [lo, hi]: 95% bootstrap interval over the prompts), and the median step "
             "at which a prompt is brought back (a prompt never brought back counts as budget + 1).</p>"]
    front = ""
    objectives = list(roles.objectives) if roles is not None else []
    if DEPTH in objectives and len(objectives) >= 2 and all(o in cols for o in objectives):
        front, rows = _front_note(con, objectives=objectives, rows=rows)
    if steps:
        image = success_curves(rows, steps=steps, labels=labels, path=out / "attack_curves.png")
        parts += [f'<img src="{image.name}" alt="success curves of the optimised attack">',
                  "<p class=note>share of the attack prompts brought back within t steps (non-decreasing; "
                  f"1 - {DEPTH} at the whole budget)</p>"]
    show = ["label"] + (["front"] if "front" in rows.columns else [])
    show += [c for c in ("sweep_id", "trial_id", "step") if c in rows.columns
             and (c != "sweep_id" or rows[c].nunique(dropna=True) > 1)]
    show += [c for c in (DEPTH, f"{DEPTH}_lo", f"{DEPTH}_hi", "attack_steps_median") if c in rows.columns]
    table = html_table(rows.assign(label=labels)[show]).replace("<table", f'<table data-section="{DEPTH}"', 1)
    return [*parts, front, metric_notes([DEPTH, "attack_steps_median"]), table]
