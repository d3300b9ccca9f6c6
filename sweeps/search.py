"""Search algorithms by name: ``grid`` / ``random`` (Tune's variant generator) and ``tpe`` / ``nsga2``
(multi-objective Optuna through ``ray.tune.search.optuna.OptunaSearch``).

An Optuna trial that the scheduler stopped early is told to the study as PRUNED: its objectives
at a rung are not the objectives of a finished run, and telling them as COMPLETE would teach the
sampler values the configuration never reached.

Warm start (``prior``, the trials of an earlier sweep, :mod:`sweeps.warm_start`): every searcher
is called as ``SEARCHERS[name](spec, dims=..., prior=...)`` (``dims``: the search dimensions of the
sweep's plan, :class:`sweeps.sweep_plan.SweepPlan`). ``tpe``/``nsga2`` add the earlier trials to the
Optuna study before the first suggestion (finished ones COMPLETE with their final objectives,
stopped ones PRUNED, as this sweep tells its own), so TPE's start-up phase counts them and NSGA-II
takes them as its first generation. Neither hands out a run already made: a proposal equal to one of
this sweep's trials (running, finished, stopped or crashed) or to an earlier finished run that is
the very run it would make (``PriorTrial.same_run``) is told FAILED to the study and the sampler is
asked again. On a space of grids, choices and integer ranges (:class:`DiscreteSpace`), after
:data:`REDRAWS` repeats the configuration not yet run nearest to the last proposal is taken (a
seeded random one on a space too large to list, :data:`sweeps.space.FINITE_LIMIT`); on a listed one
``num_samples`` is capped at the configurations left and the samplers are sized for the capped
count. TPE runs with a constant liar (running trials count among the bad ones, so parallel workers
spread out).

``grid`` does not run again a configuration that finished in the earlier sweep (as often as
``num_samples`` asks): the plan lists those trials in ``SearchPlan.reused`` and the runner copies
their stored rows into this sweep's store under the earlier sweep's id, so this sweep's front covers
the whole grid. ``ehvi`` does the same for an earlier trial that is the very run it would make
(``PriorTrial.same_run``: the training seed included) and learns from the others. ``random`` draws
without reading results; the spec check refuses a warm start with it. On a finite space a
``tpe``/``nsga2`` warm start reuses the earlier same runs as ``ehvi`` does (their rows copied,
counted in this sweep's front).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sage_core.defs.errors import ConfigError, did_you_mean

from .resolved_trial import point_key
from .space import Dimension, discrete_values, finite_points, to_optuna, to_tune
from .spec import SweepSpec

if TYPE_CHECKING:
    from .warm_start import PriorTrial

__all__ = ["SearchPlan", "SEARCHERS", "build_search", "is_final_result", "FINAL_KEY", "REDRAWS", "DiscreteSpace"]

FINAL_KEY = "final"  # the trial reports 1.0 with its last evaluation (step == total_steps)
REDRAWS = 3  # an Optuna sampler is asked at most this often for a configuration not yet run


def is_final_result(result: dict | None) -> bool:
    return result is not None and bool(result.get(FINAL_KEY))


@dataclass
class SearchPlan:
    """What the Tuner needs from the search side."""

    param_space: dict[str, Any]
    search_alg: Any | None
    num_samples: int
    notes: list[str] = field(default_factory=list)
    reused: tuple[PriorTrial, ...] = ()  # earlier trials whose configurations this plan does not run again


def _basic(spec: SweepSpec, *, dims: Mapping[str, Dimension], prior: Sequence[PriorTrial] = ()) -> SearchPlan:
    from ray.tune.search import BasicVariantGenerator  # lazy: ray (~0.7 s), off `sage` start-up

    finished = [t for t in prior if t.finished]
    if not finished:
        alg = BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=spec.search.max_concurrent)
        return SearchPlan(param_space={k: to_tune(d) for k, d in dims.items()}, search_alg=alg,
                          num_samples=spec.search.num_samples)
    # grid (the spec check refuses a warm start with random): each grid point runs num_samples times
    # less the times it finished in the earlier sweep (a grid takes only the very runs it would make:
    # every one is same_run); the rest are handed to Tune as explicit points.
    names = list(dims)
    points = [dict(zip(names, values, strict=True))
              for values in itertools.product(*(dims[n].values for n in names))  # type: ignore[union-attr]
              for _ in range(spec.search.num_samples)]
    reused, todo = _same_runs(finished, points)
    if not todo:
        raise ConfigError(f"search.warm_start: every configuration of this grid finished {spec.search.num_samples} "
                          "time(s) in the earlier sweep; nothing is left to run")
    alg = BasicVariantGenerator(points_to_evaluate=todo, random_state=spec.search.seed,
                                max_concurrent=spec.search.max_concurrent)
    note = f"grid: {len(reused)} configuration run(s) finished in the earlier sweep are reused, {len(todo)} to run"
    # each point fixes every grid dimension, so it stands for one sample (one trial) of the space
    return SearchPlan(param_space={k: to_tune(d) for k, d in dims.items()}, search_alg=alg, num_samples=len(todo),
                      notes=[note], reused=tuple(reused))


def _ehvi(spec: SweepSpec, *, dims: Mapping[str, Dimension], prior: Any = ()) -> SearchPlan:
    """``ehvi``: the proposals of Tune's variant generator (the grid points x num_samples, or num_samples
    draws) handed out one at a time by :class:`sweeps.ehvi_search.EhviSearcher`, by expected
    hypervolume gain (a warm start's ``prior`` trains its surrogate; an earlier run that is the very run a
    proposal would make is reused instead, as a grid does, and with nothing left to run the search is
    refused). With ``search.probe`` every
    proposal is handed to Tune at once instead and the scheduler
    :func:`sweeps.mf_search.build_mf_scheduler` pauses them at the first rung and resumes the best
    (``build_scheduler`` builds it and hands it the prior)."""
    from ray.tune.search import BasicVariantGenerator  # lazy: ray (~0.7 s), off `sage` start-up

    from .ehvi_search import EhviSearcher, proposals  # lazy: ray (~0.7 s), off `sage` start-up

    plan = _basic(spec, dims=dims)
    if spec.search.probe:  # no max_concurrent here: it would hide all but that many from the scheduler
        plan.search_alg = BasicVariantGenerator(random_state=spec.search.seed)
        return plan
    candidates = proposals(plan.param_space, num_samples=plan.num_samples, seed=spec.search.seed)
    reused, candidates = _same_runs(prior, candidates)
    if not candidates:
        raise ConfigError(f"search.warm_start: every proposal of this search finished in the earlier sweep with the "
                          f"same settings and training seed ({len(reused)} run(s)); nothing is left to run")
    taken = {id(t) for t in reused}
    searcher = EhviSearcher(candidates=candidates, metrics=spec.objective_metrics(), modes=spec.objective_modes(),
                            prior=[t for t in prior if id(t) not in taken], reused=reused, seed=spec.search.seed or 0)
    notes = [f"ehvi: {len(reused)} run(s) the earlier sweep finished with the same settings and training seed are "
             f"reused, {len(candidates)} to run"] if reused else []
    return SearchPlan(param_space={}, search_alg=searcher, num_samples=len(candidates), notes=notes,
                      reused=tuple(reused))


def _same_runs(prior: Sequence[PriorTrial], candidates: list[dict[str, Any]]) -> tuple[list[PriorTrial],
                                                                                      list[dict[str, Any]]]:
    """``(reused, left)``: each finished earlier trial that is the very run a proposal would make
    (``same_run``: its settings and training seed are this sweep's) takes one equal proposal out;
    running it again would only repeat it. The grid and ehvi warm starts both use it. Proposals keep
    their order; a point proposed N times is reused at most N times (the earlier sweep's first runs)."""
    left, reused = list(candidates), []
    for t in prior:
        if not (t.finished and t.same_run):
            continue
        key = point_key(t.params)
        at = next((i for i, c in enumerate(left) if point_key(c) == key), None)
        if at is not None:
            del left[at]
            reused.append(t)
    return reused, left


class DiscreteSpace:
    """The configurations a ``tpe`` / ``nsga2`` search may fall back on when its sampler keeps proposing
    runs already made. ``points``: every configuration in a seeded order (a space of at most
    :data:`sweeps.space.FINITE_LIMIT`), or None for a larger one, sampled from ``values`` instead."""

    def __init__(self, values: Mapping[str, Sequence[Any]], points: Sequence[Mapping[str, Any]] | None, *,
                 seed: int | None):
        self.values = dict(values)
        self.points = None if points is None else [dict(p) for p in points]
        self.keys = None if points is None else [point_key(p) for p in points]
        self.seed = seed or 0
        self.rank: dict[str, dict[Any, int]] = {}  # a numeric dimension's values by size: 0, 1, ...
        for name, vals in self.values.items():
            distinct = {_hashable(v) for v in vals}
            if len(distinct) > 1 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct):
                self.rank[name] = {v: i for i, v in enumerate(sorted(distinct))}

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        """Per dimension: a number's move along its sorted values (0 to 1), any other value 0 / 1."""
        total = 0.0
        for name in self.values:
            x, y = _hashable(a[name]), _hashable(b[name])
            ranks = self.rank.get(name)
            if ranks is not None and x in ranks and y in ranks:
                total += abs(ranks[x] - ranks[y]) / (len(ranks) - 1)
            else:
                total += float(x != y)
        return round(total, 9)  # equal sums tie (then the seeded order decides), whatever the rounding

    def untaken(self, taken: set[str], proposal: Mapping[str, Any], draws: int = 1000) -> dict[str, Any] | None:
        """The configuration not yet run (``taken``: point keys) nearest to ``proposal``, the first in the
        seeded order on a tie; on a space too large to list, the first of ``draws`` seeded random
        configurations not yet run. None when there is none (or none was drawn)."""
        if self.points is not None and self.keys is not None:
            left = [p for p, k in zip(self.points, self.keys, strict=True) if k not in taken]
            if not left:
                return None
            best: dict[str, Any] = min(left, key=lambda p: self.distance(p, proposal))
            return dict(best)
        rng = random.Random(self.seed * 1_000_003 + len(taken))
        for _ in range(draws):
            pick = {name: rng.choice(vals) for name, vals in self.values.items()}
            if point_key(pick) not in taken:
                return pick
        return None


def _hashable(value: Any) -> Any:
    """A list value as Optuna's categoricals hold it (a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def _add_prior(study: Any, sampler: Any, metrics: list[str], space: dict, prior: Sequence[PriorTrial]) -> None:
    """Earlier trials into an Optuna study: finished ones COMPLETE with their final objectives (in
    ``metrics`` order), the others PRUNED. A genetic sampler (NSGA-II) reads only trials tagged with a
    generation: the finished ones are its generation 0."""
    import optuna  # lazy: optuna (~0.1 s), off `sage` start-up

    tag = getattr(sampler, "_get_generation_key", None)
    for t in prior:
        params = {k: _hashable(v) for k, v in t.params.items()}
        done = t.finished
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED,
            values=[t.metrics[m] for m in metrics] if done else None, params=params,
            distributions=space, system_attrs={tag(): 0} if done and tag else None))


def _optuna_search_class():
    from ray.tune.search import Searcher  # lazy: ray (~0.7 s), off `sage` start-up
    from ray.tune.search.optuna import OptunaSearch  # lazy: ray + optuna, off `sage` start-up

    class ParetoOptunaSearch(OptunaSearch):
        """OptunaSearch that tells early-stopped trials as PRUNED, not COMPLETE with partial values, and
        never hands out a run already made (``taken``: point keys of earlier runs that are this sweep's
        very runs; ``discrete``: a space of grids, choices and integer ranges, what it falls back on after
        :data:`REDRAWS` repeated proposals). Its state (``__dict__``) is what Tune's save pickles."""

        def __init__(self, *args: Any, taken: Sequence[str] = (), discrete: DiscreteSpace | None = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._taken: set[str] = set(taken)
            self._discrete = discrete
            self._key_of: dict[str, str] = {}

        def suggest(self, trial_id: str) -> Any:  # the params, or Searcher.FINISHED
            import optuna  # lazy: optuna (~0.1 s), off `sage` start-up

            if trial_id in self._key_of:  # asked again for a trial it already configured
                return super().suggest(trial_id)
            study = cast(optuna.Study, self._ot_study)
            for _ in range(REDRAWS):
                params = cast(dict, super().suggest(trial_id))
                if point_key(params) not in self._taken:
                    break
                study.tell(self._ot_trials.pop(trial_id), state=optuna.trial.TrialState.FAIL)
            else:  # only runs already made were proposed: the nearest one not yet run, on a discrete space
                left = self._discrete.untaken(self._taken, params) if self._discrete is not None else None
                if left is not None:
                    study.enqueue_trial({k: _hashable(v) for k, v in left.items()})
                elif self._discrete is not None and self._discrete.points is not None:
                    return Searcher.FINISHED  # every configuration of a finite space has run
                params = cast(dict, super().suggest(trial_id))  # the enqueued one; on a float space: a repeat
                if left is not None and point_key(params) in self._taken:
                    raise RuntimeError(f"optuna did not take the enqueued configuration {left}; got {params}")
            self._key_of[trial_id] = point_key(params)
            self._taken.add(self._key_of[trial_id])
            return params

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            # a trial that errored keeps its configuration taken: `--retry-failed` reruns it under its id
            if not error and result is not None and not is_final_result(result):
                result = None  # OptunaSearch tells a result-less, error-less trial as PRUNED
            super().on_trial_complete(trial_id, result=result, error=error)

        def add_prior(self, prior: Sequence[PriorTrial]) -> None:
            """Earlier trials into the study (:func:`_add_prior`)."""
            _add_prior(self._ot_study, self._sampler, cast(list[str], self._metric), cast(dict, self._space), prior)

    return ParetoOptunaSearch


def _optuna(spec: SweepSpec, sampler_name: str, *, dims: Mapping[str, Dimension],
            prior: Sequence[PriorTrial] = ()) -> SearchPlan:
    import optuna  # lazy: optuna (~0.1 s), off `sage` start-up

    seed = spec.search.seed
    points, values = finite_points(dims), discrete_values(dims)
    if points is not None:
        random.Random(seed).shuffle(points)
    same = [t for t in prior if t.finished and t.same_run]
    reused, left = _same_runs(same, points) if points is not None else ([], [])
    if points is not None and not left:
        raise ConfigError(f"search.warm_start: every configuration of this space finished in the earlier sweep with "
                          f"the same settings and training seed ({len(reused)} run(s)); nothing is left to run")
    num_samples = spec.search.num_samples if points is None else min(spec.search.num_samples, len(left))
    sampler: optuna.samplers.BaseSampler  # sized for the trials this sweep will run
    if sampler_name == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                             n_startup_trials=min(10, max(2, num_samples // 3)))
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, num_samples // 2)))
    alg = _optuna_search_class()(space={k: to_optuna(d) for k, d in dims.items()},
                                 metric=spec.objective_metrics(), mode=spec.objective_modes(), sampler=sampler,
                                 taken=[point_key(t.params) for t in same],
                                 discrete=None if values is None else DiscreteSpace(values, points, seed=seed))
    alg.add_prior(prior)
    notes = []
    if reused:
        notes.append(f"{sampler_name}: {len(reused)} run(s) the earlier sweep finished with the same settings and "
                     f"training seed are reused, {len(left)} configuration(s) of the space left to run")
    if num_samples < spec.search.num_samples:
        notes.append(f"{sampler_name}: search.num_samples={spec.search.num_samples} but the space has {len(left)} "
                     f"configuration(s) not yet run, and none runs twice: the search ends after {len(left)}")
    return SearchPlan(param_space={}, search_alg=alg, num_samples=num_samples, notes=notes, reused=tuple(reused))


# ``search.algorithm`` -> (spec, *, dims, prior) -> SearchPlan; ``prior``: an earlier sweep's trials (warm start).
SEARCHERS: dict[str, Callable[..., SearchPlan]] = {
    "grid": _basic,
    "random": _basic,
    "tpe": lambda spec, *, dims, prior=(): _optuna(spec, "tpe", dims=dims, prior=prior),
    "nsga2": lambda spec, *, dims, prior=(): _optuna(spec, "nsga2", dims=dims, prior=prior),
    "ehvi": _ehvi,
}


def build_search(spec: SweepSpec, *, prior: Sequence[PriorTrial] = (),
                 dims: Mapping[str, Dimension] | None = None) -> SearchPlan:
    """The search of ``spec`` over ``dims`` (the plan's dimensions; a resumed sweep, whose Tune
    restores its searcher, passes none: the spec's)."""
    name = spec.search.algorithm
    if name not in SEARCHERS:
        raise ConfigError(f"search.algorithm={name!r}: unknown{did_you_mean(name, SEARCHERS)}; "
                          f"known: {', '.join(SEARCHERS)}")
    return SEARCHERS[name](spec, dims=spec.dimensions() if dims is None else dims, prior=prior)
