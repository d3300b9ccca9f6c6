"""The read side of sage-sweeps: results store, DuckDB views, Pareto fronts, ablations, report.

Never imports torch or ray, and of ``sage_core`` only its torch-free shared definitions
(:mod:`sage_core.defs`: metric registry, column roles, TrainConfig's defaults, errors); a test proves
it, so it works alone in a notebook::

    import analysis
    con = analysis.connect("runs/demo/results")
    front = analysis.pareto_front(con, x="concept_auc", y="util_sib")
    analysis.hypervolume(front, x="concept_auc", y="util_sib", ref=(1.0, 0.0))
"""

from __future__ import annotations

from analysis.ablation import PAPER_DEFAULTS, ablation_table
from analysis.pareto import hypervolume, pareto_front, pareto_ranks
from analysis.report import write_report
from analysis.sql import readonly_query
from analysis.store import KEY_COLUMNS, ResultStore
from analysis.views import connect, locate
from sage_core.defs.errors import AnalysisError, QueryError, StorageError, UnknownNameError
from sage_core.defs.metrics import direction, is_metric

__all__ = [
    "AnalysisError",
    "StorageError",
    "QueryError",
    "UnknownNameError",
    "ResultStore",
    "KEY_COLUMNS",
    "connect",
    "locate",
    "pareto_front",
    "pareto_ranks",
    "hypervolume",
    "ablation_table",
    "PAPER_DEFAULTS",
    "readonly_query",
    "write_report",
    "direction",
    "is_metric",
]
