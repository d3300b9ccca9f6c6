"""Column roles of a result row: which columns are its key and its bookkeeping, never hyperparameters.

A sweep declares the rest in its ``schema.json`` (format: :mod:`analysis.column_roles`, written by
``sweeps.schema_file``): hyperparameters are TrainConfig fields, metrics are the registry's
(:mod:`sage_core.defs.metrics`). Readers without that file (a bare dataset, ``sage eval`` rows) infer
hyperparameters as the columns that are none of these and no metric.
"""

from __future__ import annotations

__all__ = ["KEY_COLUMNS", "BOOKKEEPING_COLUMNS", "READER_COLUMNS"]

#: One row per (sweep_id, trial_id, step, fidelity).
KEY_COLUMNS: tuple[str, ...] = ("sweep_id", "trial_id", "step", "fidelity")

#: Columns a trial writes that say where, when and how it was measured, not what was trained.
BOOKKEEPING_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "status", "error", "wall_s", "device_s", "code_version",
                                        "checkpoint", "total_steps", "epoch", "seed", "base_encoder")

#: Columns a reader adds to the rows it reads (``source``: reported or recomputed, ``front``: Pareto
#: rank) or that rows of other producers carry (``preset``).
READER_COLUMNS: tuple[str, ...] = ("source", "front", "preset")
