"""Search algorithms by name: ``grid`` / ``random`` (Tune's variant generator) and ``tpe`` / ``nsga2``
(multi-objective Optuna through ``ray.tune.search.optuna.OptunaSearch``).

An Optuna trial that the scheduler stopped early is told to the study as PRUNED: its objectives
at a rung are not the objectives of a finished run, and telling them as COMPLETE would teach the
sampler values the configuration never reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sage_core.errors import ConfigError, did_you_mean

from .space import to_optuna, to_tune
from .spec import SweepSpec

__all__ = ["SearchPlan", "SEARCHERS", "build_search", "is_final_result", "FINAL_KEY"]

FINAL_KEY = "final"  # the trial reports 1.0 with its last evaluation (step == total_steps)


def is_final_result(result: dict | None) -> bool:
    return result is not None and bool(result.get(FINAL_KEY))


@dataclass
class SearchPlan:
    """What the Tuner needs from the search side."""

    param_space: dict[str, Any]
    search_alg: Any | None
    num_samples: int
    notes: list[str] = field(default_factory=list)


def _basic(spec: SweepSpec) -> SearchPlan:
    from ray.tune.search import BasicVariantGenerator

    dims = spec.dimensions()
    alg = BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=spec.search.max_concurrent)
    return SearchPlan(param_space={k: to_tune(d) for k, d in dims.items()}, search_alg=alg,
                      num_samples=spec.search.num_samples)


def _ehvi(spec: SweepSpec, *, prior: Any = ()) -> SearchPlan:
    """``ehvi``: Tune's variant generator proposes every trial (the grid points x num_samples, or
    num_samples draws); the search itself is the scheduler :func:`sweeps.mf_search.build_mf_scheduler`
    (built by ``build_scheduler``, which hands it the prior), which picks what runs from them."""
    return _basic(spec)


def _optuna_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class ParetoOptunaSearch(OptunaSearch):
        """OptunaSearch that tells early-stopped trials as PRUNED, not COMPLETE with partial values."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if not error and result is not None and not is_final_result(result):
                result = None  # OptunaSearch tells a result-less, error-less trial as PRUNED
            super().on_trial_complete(trial_id, result=result, error=error)

    return ParetoOptunaSearch


def _optuna(spec: SweepSpec, sampler_name: str) -> SearchPlan:
    import optuna

    dims = spec.dimensions()
    seed = spec.search.seed
    sampler: optuna.samplers.BaseSampler
    if sampler_name == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, spec.search.num_samples // 3)))
    else:
        pop = max(2, min(50, spec.search.num_samples // 2))
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
    alg = _optuna_search_class()(space={k: to_optuna(d) for k, d in dims.items()},
                                 metric=spec.objective_metrics(), mode=spec.objective_modes(), sampler=sampler)
    return SearchPlan(param_space={}, search_alg=alg, num_samples=spec.search.num_samples)


SEARCHERS: dict[str, Callable[[SweepSpec], SearchPlan]] = {
    "grid": _basic,
    "random": _basic,
    "tpe": lambda spec: _optuna(spec, "tpe"),
    "nsga2": lambda spec: _optuna(spec, "nsga2"),
    "ehvi": _ehvi,
}


def build_search(spec: SweepSpec) -> SearchPlan:
    name = spec.search.algorithm
    if name not in SEARCHERS:
        raise ConfigError(f"search.algorithm={name!r}: unknown{did_you_mean(name, SEARCHERS)}; "
                          f"known: {', '.join(SEARCHERS)}")
    return SEARCHERS[name](spec)
