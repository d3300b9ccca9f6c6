"""One trial, resolved once: its id, its :class:`~sage_core.defs.config.TrainConfig` and its store columns.

Tune hands a trial its sampled ``params`` (the spec's dimensions, plus ``variant`` when the spec
names variants). :func:`resolve_trial` turns them into the trial's TrainConfig (base < variant <
params) and the hyperparameter columns every result row of the trial carries. The driver resolves
each trial once, when Tune starts it (one :class:`TrialResolver` shared by the store callback and the
trackers), and looks it up by trial id for every result; the trial process resolves its own params
once with the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sage_core.defs.config import TrainConfig, load_config

from .spec import VARIANT, trial_values

__all__ = ["ResolvedTrial", "resolve_trial", "TrialResolver", "hyperparameter_columns"]

# Not a hyperparameter: where the cache lives does not change a result.
_NOT_COLUMNS = frozenset({"cache_dir"})


def hyperparameter_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig values as plain columns: tuples/lists become ``"1,2,3"`` text, and a nested
    mapping becomes one column per key (``text_eval`` -> ``text_eval.attack_samples``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(hyperparameter_columns({f"{key}.{k}": v for k, v in value.items()}))
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[key] = value
    return out


@dataclass(frozen=True)
class ResolvedTrial:
    """A trial as the driver and the trial process both see it; ``columns`` is read-only."""

    trial_id: str
    config: TrainConfig
    columns: Mapping[str, Any] = field(repr=False)


def resolve_trial(trial_id: str, params: Mapping[str, Any], *, base: Mapping[str, Any],
                  variants: Mapping[str, Mapping[str, Any]]) -> ResolvedTrial:
    """The trial's TrainConfig (built once here) and its hyperparameter columns (+ ``variant``)."""
    cfg = load_config(overrides=trial_values(base, params, variants))
    columns = hyperparameter_columns({k: v for k, v in cfg.to_dict().items() if k not in _NOT_COLUMNS})
    if VARIANT in params:
        columns[VARIANT] = str(params[VARIANT])
    return ResolvedTrial(trial_id=str(trial_id), config=cfg, columns=MappingProxyType(columns))


class TrialResolver:
    """Resolves each Tune trial once, by trial id, for every driver callback that needs it (the
    store callback, the trackers). Pickled with Tune's callbacks without its cache."""

    def __init__(self, *, base: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]] | None = None):
        self.base = dict(base)
        self.variants = {k: dict(v) for k, v in (variants or {}).items()}
        self._resolved: dict[str, ResolvedTrial] = {}

    def __call__(self, trial: Any) -> ResolvedTrial:
        key = str(trial.trial_id)
        if key not in self._resolved:
            self._resolved[key] = resolve_trial(key, trial.config, base=self.base, variants=self.variants)
        return self._resolved[key]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_resolved": {}}  # resolved again from trial.config after a restore
