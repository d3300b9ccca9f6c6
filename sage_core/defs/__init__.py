"""Shared definitions: what ``sage_core``, ``sweeps`` and ``analysis`` all name.

``TrainConfig`` and its defaults (:mod:`.config`), the names a config may give (:mod:`.locations`),
the metric registry (:mod:`.metrics`), the column roles of a result row (:mod:`.columns`) and the one
exception family (:mod:`.errors`). Imports neither torch nor Ray (a test proves it): ``analysis``
may import this package and nothing else of ``sage_core``.
"""
