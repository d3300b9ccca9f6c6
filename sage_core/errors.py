"""Moved to :mod:`sage_core.defs.errors`. This path stays only while files edited in parallel
(tests/test_attack.py, tests/test_attack_training.py, tests/test_attack_sweep.py) still import it;
new code imports :mod:`sage_core.defs.errors`."""

from sage_core.defs.errors import *  # noqa: F403
from sage_core.defs.errors import __all__  # noqa: F401
