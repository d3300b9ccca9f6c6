"""Moved to :mod:`sage_core.defs.metrics` (the one metric registry). This path stays only while
files edited in parallel (analysis/report.py, tests/test_attack_sweep.py) still import it; new code
imports :mod:`sage_core.defs.metrics`."""

from sage_core.defs.metrics import *  # noqa: F403
from sage_core.defs.metrics import __all__  # noqa: F401
