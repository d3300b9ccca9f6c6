"""`sage reliability`, and what `sage pareto` adds to a front: seed-noise warnings and paired comparisons.

Thin wrappers over :mod:`analysis.reliability` and :mod:`analysis.paired_compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import typer

from analysis.paired_compare import front_comparisons
from analysis.prompt_scores import scores_root_for
from analysis.reliability import COLUMNS_NOTE, low_signal_lines, reliability_table
from analysis.views import locate
from sage_core.defs.errors import QueryError
from sweeps.cli.common import RESULTS_HELP, SKIP_BAD_HELP, duckdb_errors, print_frame


def reliability(
    results: str = typer.Argument(..., help=RESULTS_HELP),
    objectives: str | None = typer.Option(
        None, "--objectives", help="Comma-separated objectives. Default: the sweep's (its schema.json), else every "
        "graded objective the store holds. Example: --objectives concept_auc,util_sib"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=SKIP_BAD_HELP),
) -> None:
    """Print how far each objective can be trusted: the share of its between-configuration variance
    that is signal rather than training-seed noise (with a 95% bootstrap interval over configurations;
    needs a sweep with `seeds: N`), the Kendall tau between each earlier evaluation step and the final
    one (what a scheduler deciding there sees), and the smallest difference it resolves (95% least
    significant difference of two configuration means, and of two single runs).

    Example: sage reliability runs/ablation-components-cpu
    """
    names = None
    if objectives is not None:
        names = [o.strip() for o in objectives.split(",") if o.strip()]
        if not names:
            raise QueryError(f"--objectives {objectives!r} names no objective "
                             "(example: --objectives concept_auc,util_sib)")
    with duckdb_errors():
        table = reliability_table(results, objectives=names, skip_bad=skip_bad)
    if table.empty:
        typer.echo("no objective columns in the results; nothing to measure")
        return
    print_frame(table, title="Reliability per objective (final step of each trial)", intervals=True)
    typer.echo(COLUMNS_NOTE)
    for note in table.attrs.get("notes", []):
        typer.echo(f"note: {note}")
    for line in low_signal_lines(table):
        typer.echo(line, err=True)


@dataclass
class FrontChecks:
    """What `sage pareto` prints beside a front: the ``separable`` mark per front row, the deciding
    pairs, and one warning line per objective whose signal share is below 0.5."""

    separable: dict[Any, str | None] = field(default_factory=dict)
    pairs: Any = None
    warnings: list[str] = field(default_factory=list)

    def mark(self, front):
        """``front`` with a ``separable`` column when some pair could be compared."""
        if not any(v is not None for v in self.separable.values()):
            return front
        return front.assign(separable=[self.separable.get(i) or "–" for i in front.index])

    def echo(self) -> None:
        compared = self.pairs is not None and not self.pairs.empty and "P(A dom)" in self.pairs.columns
        if compared:
            print_frame(self.pairs, title="Pairs that decide the front (paired bootstrap over prompts)",
                         intervals=True)
            typer.echo("A-B: difference of A and B [95% paired interval]; P(A dom): share of paired replicates in "
                       "which A dominates B; verdict at 95%: A dominates, B dominates, trade-off (the order of the "
                       "point estimates holds), or not separable (another draw of prompts could reorder them); "
                       "separable = no: a front member with such a pair")
        elif self.pairs is not None and not self.pairs.empty:
            typer.echo("paired comparisons: no per-prompt scores for these trials (a sweep writes them to "
                       "<sweep folder>/prompt_scores; bare datasets have none)")
        for line in self.warnings:
            typer.echo(line, err=True)


def front_checks(results: str, *, ranked, objectives: Sequence[str], group: str | None,
                 skip_bad: bool) -> FrontChecks:
    """Seed-noise warnings for ``objectives`` and the paired comparisons of ``ranked``'s front."""
    with duckdb_errors():
        warnings = low_signal_lines(reliability_table(results, objectives=list(objectives), skip_bad=skip_bad))
    needed = {"sweep_id", "trial_id", "step"}
    if ranked.empty or not needed <= set(ranked.columns):
        return FrontChecks(warnings=warnings)
    got = front_comparisons(ranked, objectives, scores_root=scores_root_for(locate(results).uri), group=group)
    return FrontChecks(separable=got.separable, pairs=got.pairs, warnings=warnings)


def register(app: typer.Typer) -> None:
    app.command("reliability")(reliability)
