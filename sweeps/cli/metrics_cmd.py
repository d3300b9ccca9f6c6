"""``sage metrics``: the metric registry as a table (what each metric means, which way is better)."""

from __future__ import annotations

import typing

import typer
from rich.console import Console
from rich.table import Table

from sage_core.defs import metrics as registry
from sage_core.defs.errors import QueryError
from sage_core.defs.metrics import Fidelity

FIDELITIES = typing.get_args(Fidelity)  # the registry's own list: the help can never miss one


def metrics(
    fidelity: str | None = typer.Option(
        None, "--fidelity",
        help=f"Only the metrics of one fidelity: {', '.join(FIDELITIES)}. Example: --fidelity robust"),
    objectives: bool = typer.Option(False, "--objectives", help="Only the graded metrics a sweep may rank by."),
) -> None:
    """List every metric the store can hold: direction, fidelity, range and meaning.

    The registry (sage_core/defs/metrics.py) is the one place that names a metric; spec objectives,
    the Pareto scheduler, `sage pareto`, `sage ablation` and the report all read it. A name ending
    in `_` is a family (`asr_text_` -> `asr_text_i2p_sexual`). Metrics with a bootstrap interval
    also have `<metric>_lo` and `<metric>_hi` columns.

    Example: sage metrics --fidelity text --objectives
    """
    kinds = typing.get_args(registry.Fidelity)
    if fidelity is not None and fidelity not in kinds:
        raise QueryError(f"--fidelity {fidelity!r} is not allowed (allowed: {', '.join(kinds)})")
    table = Table(title="metric registry (defaults: " + ", ".join(registry.DEFAULT_OBJECTIVES) + ")")
    for col in ("metric", "better", "fidelity", "range", "objective", "meaning"):
        table.add_column(col, overflow="fold")
    for m in registry.REGISTRY.values():
        if (fidelity and m.fidelity != fidelity) or (objectives and not m.objective):
            continue
        table.add_row(m.name + ("<name>" if m.family else ""), m.better, m.fidelity,
                      f"[{m.range[0]:g}, {m.range[1]:g}]", "yes" if m.objective else "", m.meaning)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics)
