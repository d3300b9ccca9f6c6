"""One trial, resolved once: its id, its :class:`~sage_core.defs.config.TrainConfig` and its store columns.

Tune hands a trial its sampled ``params`` (the spec's dimensions, plus ``variant`` when the spec
names variants). :func:`trial_config` is the one function that turns them into a TrainConfig (base <
variant < params); :func:`resolve_trial` adds the hyperparameter columns every result row of the
trial carries. On the driver the :class:`~sweeps.sweep_plan.SweepPlan` builds each combination's
config once, and one :class:`TrialResolver` (shared by the store callback and the trackers) looks a
trial up in it by its params (building only a sampled value the plan could not know); the trial
process builds its own config once with the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sage_core.defs.config import TrainConfig, load_config

from .spec_model import VARIANT, trial_values

__all__ = ["ResolvedTrial", "resolve_trial", "resolved", "trial_config", "point_key", "TrialResolver",
           "hyperparameter_columns"]

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


def point_key(params: Mapping[str, Any]) -> str:
    """A trial's params as one hashable text (lists as tuples): equal params, equal keys."""
    return repr(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any],
                 variants: Mapping[str, Mapping[str, Any]] | None = None) -> TrainConfig:
    """The TrainConfig of one trial: base < its variant's overrides < its params (the one builder)."""
    return load_config(overrides=trial_values(base, params, variants or {}))


@dataclass(frozen=True)
class ResolvedTrial:
    """A trial as the driver and the trial process both see it; ``columns`` is read-only."""

    trial_id: str
    config: TrainConfig
    columns: Mapping[str, Any] = field(repr=False)


def resolved(trial_id: str, params: Mapping[str, Any], config: TrainConfig) -> ResolvedTrial:
    """A trial of an already built ``config``, with its hyperparameter columns (+ ``variant``)."""
    columns = hyperparameter_columns({k: v for k, v in config.to_dict().items() if k not in _NOT_COLUMNS})
    if VARIANT in params:
        columns[VARIANT] = str(params[VARIANT])
    return ResolvedTrial(trial_id=str(trial_id), config=config, columns=MappingProxyType(columns))


def resolve_trial(trial_id: str, params: Mapping[str, Any], *, base: Mapping[str, Any],
                  variants: Mapping[str, Mapping[str, Any]]) -> ResolvedTrial:
    """The trial's TrainConfig (built here) and its hyperparameter columns."""
    return resolved(trial_id, params, trial_config(base, params, variants))


class TrialResolver:
    """Resolves each Tune trial once, by trial id, for every driver callback that needs it (the
    store callback, the trackers). ``planned``: configs already built, by :func:`point_key` of their
    params (:meth:`sweeps.sweep_plan.SweepPlan.configs`). Pickled with Tune's callbacks without
    them and without its cache: a restored driver resolves each trial again, once."""

    def __init__(self, *, base: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]] | None = None,
                 planned: Mapping[str, TrainConfig] | None = None):
        self.base = dict(base)
        self.variants = {k: dict(v) for k, v in (variants or {}).items()}
        self._planned = dict(planned or {})
        self._resolved: dict[str, ResolvedTrial] = {}

    def __call__(self, trial: Any) -> ResolvedTrial:
        key = str(trial.trial_id)
        if key not in self._resolved:
            config = self._planned.get(point_key(trial.config))
            self._resolved[key] = (resolved(key, trial.config, config) if config is not None else
                                   resolve_trial(key, trial.config, base=self.base, variants=self.variants))
        return self._resolved[key]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_resolved": {}, "_planned": {}}
