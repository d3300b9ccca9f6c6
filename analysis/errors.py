"""Moved to :mod:`sage_core.defs.errors` (one exception family rooted at ``SageError``). This path
stays only while files edited in parallel (analysis/report.py, analysis/ablation_paired.py,
sweeps/cli/analysis_cmds.py) still import it; new code imports :mod:`sage_core.defs.errors`."""

from sage_core.defs.errors import AnalysisError, QueryError, StorageError, UnknownNameError

__all__ = ["AnalysisError", "QueryError", "StorageError", "UnknownNameError"]
