"""Moved to :mod:`sage_core.defs.config`. This path stays only while a file edited in parallel
(bench/gpu_check.py) still imports it; new code imports :mod:`sage_core.defs.config`."""

from sage_core.defs.config import *  # noqa: F403
from sage_core.defs.config import __all__  # noqa: F401
