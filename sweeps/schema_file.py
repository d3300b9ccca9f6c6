"""``<sweep>/schema.json``: the column roles of a sweep's results (format: :mod:`analysis.column_roles`).

Written by the driver before the first trial: the hyperparameter columns every row carries (those
of a resolved trial), the ones the spec varies, the metrics it names with their registry
directions, the bookkeeping columns, and the base config an ablation holds the others at.
"""

from __future__ import annotations

from typing import Any

from analysis.column_roles import ColumnRoles
from sage_core.defs.columns import BOOKKEEPING_COLUMNS
from sage_core.defs.config import field_defaults
from sage_core.defs.metrics import lookup

from .resolved_trial import hyperparameter_columns
from .spec import SweepSpec
from .sweep_dir import SweepDir
from .sweep_plan import SweepPlan

__all__ = ["column_roles", "write_schema"]


def _declared_metrics(spec: SweepSpec) -> list[str]:
    image = list(spec.fidelity.image.metrics) if spec.fidelity.image is not None else []
    return list(dict.fromkeys([*spec.objective_metrics(), *image]))


def column_roles(spec: SweepSpec, *, sweep_id: str, plan: SweepPlan) -> ColumnRoles:
    """The roles of ``spec``'s result columns, read from its plan (:func:`sweeps.sweep_plan.plan_of`)."""
    defaults = hyperparameter_columns({**field_defaults(), **plan.base})
    hyper = [c for c in plan.first().columns if c not in BOOKKEEPING_COLUMNS]
    metrics = {m: entry.direction for m in _declared_metrics(spec) if (entry := lookup(m)) is not None}
    return ColumnRoles(sweep_id=sweep_id, hyperparameters=tuple(hyper), varied=tuple(plan.dimensions),
                       metrics=metrics, objectives=tuple(spec.objective_metrics()),
                       bookkeeping=BOOKKEEPING_COLUMNS,
                       defaults={k: v for k, v in defaults.items() if k in hyper and _plain(v)})


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def write_schema(folder: SweepDir, *, spec: SweepSpec, sweep_id: str, plan: SweepPlan) -> ColumnRoles:
    roles = column_roles(spec, sweep_id=sweep_id, plan=plan)
    folder.write_file(folder.schema_file, roles.to_json())
    return roles
