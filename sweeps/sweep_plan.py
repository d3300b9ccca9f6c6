"""``SweepPlan``: a spec's trials resolved once on the driver, before Ray starts.

:func:`build_plan` reads the spec once: the base TrainConfig values, the search dimensions, and
every combination validation must try (grid points x range ends x choices; past
:data:`MAX_VALIDATED_COMBINATIONS` a seeded sample) with its TrainConfig, built here and nowhere
else on the driver, and the problems those configs show (each once, with the first combination
that shows it). Validation reports the problems, base preparation reads the distinct base-data
keys, the schema the columns, the store's resolver the configs (a grid trial's params are one of
the combinations; a value sampled from a range is resolved when its trial starts).

:func:`plan_of` hands the run the plan its validation built (same spec, same base values), so a
validated spec is planned once per process.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sage_core.data import load_prompts
from sage_core.defs.config import TrainConfig
from sage_core.defs.errors import ConfigError, SageError

from .resolved_trial import ResolvedTrial, point_key, resolved, trial_config
from .space import Dimension, corner_values, enumerate_combinations
from .spec_model import VARIANT, SweepSpec, base_train_config

__all__ = ["SweepPlan", "PlannedTrial", "Coverage", "build_plan", "plan_of", "combination_count",
           "MAX_VALIDATED_COMBINATIONS"]

# Every combination is validated up to this many; beyond it a seeded sample of this many, and
# `sage sweep validate` says so.
MAX_VALIDATED_COMBINATIONS = 100_000


@dataclass(frozen=True)
class Coverage:
    """Which of the sweep's configurations validation built: all of them, or a seeded sample."""

    checked: int
    total: int
    sampled: bool

    def __str__(self) -> str:
        if self.sampled:
            return (f"validated a seeded sample of {self.checked:,} of its {self.total:,} configurations "
                    "(grid points x range ends x choices)")
        return f"validated all {self.total:,} configurations"


@dataclass(frozen=True)
class PlannedTrial:
    """One combination of the dimensions and its TrainConfig."""

    params: Mapping[str, Any]
    config: TrainConfig
    base_data_key: str


@dataclass(frozen=True)
class SweepPlan:
    """The resolved trials of one spec (see the module docstring)."""

    fingerprint: str
    base: Mapping[str, Any]
    variants: Mapping[str, Mapping[str, Any]]
    dimensions: Mapping[str, Dimension]
    trials: tuple[PlannedTrial, ...]
    problems: tuple[str, ...]
    coverage: Coverage

    @functools.cached_property
    def configs(self) -> Mapping[str, TrainConfig]:
        """Each planned config by :func:`~sweeps.resolved_trial.point_key` of its params."""
        return MappingProxyType({point_key(t.params): t.config for t in self.trials})

    def first(self) -> ResolvedTrial:
        """The first planned trial with its columns (every trial of a sweep has the same columns)."""
        trial = self.trials[0]
        return resolved("plan", trial.params, trial.config)

    def base_configs(self) -> list[TrainConfig]:
        """One config per distinct base-data key: what ``sage_core.trainer.prepare`` builds once.
        A sampled plan may miss keys; then the dimensions that can change the key (the variant and
        the fields of ``base_data_key``) are crossed at the others' first values."""
        first: dict[str, TrainConfig] = {}
        for trial in self.trials if not self.coverage.sampled else self._base_data_trials():
            first.setdefault(trial.base_data_key, trial.config)
        return list(first.values())

    def _base_data_trials(self) -> tuple[PlannedTrial, ...]:
        fields = json.loads(self.trials[0].base_data_key)
        fixed = dict(self.trials[0].params)
        varying = {n: d for n, d in self.dimensions.items() if n == VARIANT or n in fields}
        return tuple(_planned({**fixed, **combo}, base=self.base, variants=self.variants)
                     for combo in enumerate_combinations(varying))


def _planned(params: Mapping[str, Any], *, base: Mapping[str, Any],
             variants: Mapping[str, Mapping[str, Any]]) -> PlannedTrial:
    config = trial_config(base, params, variants)
    return PlannedTrial(params=dict(params), config=config, base_data_key=config.base_data_key())


def _fingerprint(spec: SweepSpec, base: Mapping[str, Any] | str) -> str:
    """What a plan depends on: the spec (not its storage), the base values, the validation limit."""
    return json.dumps([spec.model_dump(mode="json", exclude={"storage"}), base, MAX_VALIDATED_COMBINATIONS],
                      sort_keys=True, default=str)


_LAST: dict[str, SweepPlan] = {}  # the plan the latest build (a validation) made, by fingerprint


def build_plan(spec: SweepSpec) -> SweepPlan:
    """Build every combination's TrainConfig (or a seeded sample) once; problems are recorded, not raised."""
    dims = spec.dimensions()
    total = combination_count(dims)
    try:
        base = base_train_config(spec)
    except SageError as exc:
        return SweepPlan(fingerprint=_fingerprint(spec, str(exc)), base={}, variants=spec.variants, dimensions=dims,
                         trials=(), problems=(str(exc),), coverage=Coverage(checked=0, total=total, sampled=False))
    trials: list[PlannedTrial] = []
    problems: tuple[str, ...] = ()
    coverage = Coverage(checked=0, total=total, sampled=False)
    if not spec.too_many_trials():  # else the spec's own check says so, and building them all takes long
        combos, coverage = _combinations_to_check(dims)
        problems = _trial_problems(spec, base, combos, trials)
    plan = SweepPlan(fingerprint=_fingerprint(spec, base), base=base, variants=spec.variants, dimensions=dims,
                     trials=tuple(trials), problems=problems, coverage=coverage)
    _LAST.clear()
    _LAST[plan.fingerprint] = plan
    return plan


def plan_of(spec: SweepSpec) -> SweepPlan:
    """The plan the latest validation built for this spec (same spec but its storage, same base
    values), else a new one."""
    try:
        base: Mapping[str, Any] | str = base_train_config(spec)
    except SageError as exc:
        base = str(exc)
    plan = _LAST.get(_fingerprint(spec, base))
    return plan if plan is not None else build_plan(spec)


def _trial_problems(spec: SweepSpec, base: Mapping[str, Any], combos: Iterator[dict[str, Any]],
                    trials: list[PlannedTrial]) -> tuple[str, ...]:
    """Build each combination's config into ``trials``; each problem once, with the first
    combination that shows it."""
    bad: dict[str, dict[str, Any]] = {}
    lengths: dict[tuple[Any, ...], int | str] = {}
    last_rung = max(spec.fidelity.rungs or [0])
    workers = spec.resources.workers
    for combo in combos:
        try:
            trial = _planned(combo, base=base, variants=spec.variants)
        except ConfigError as exc:
            for p in exc.problems:
                bad.setdefault(p, combo)
            continue
        trials.append(trial)
        cfg = trial.config
        length = _run_length(cfg, lengths)
        if isinstance(length, str):
            bad.setdefault(length, combo)
        elif last_rung and last_rung >= length[0]:
            bad.setdefault(f"fidelity.rungs: last rung {last_rung} must be below the run length "
                           f"{length[0]} steps ({length[1]})", combo)
        if cfg.batch_size % workers:
            bad.setdefault(f"batch_size={cfg.batch_size} must be a multiple of resources.workers={workers} "
                           "(each worker embeds an equal share of the batch)", combo)
    return tuple(f"trial config{_with(combo)}: {p}" for p, combo in bad.items())


def _with(combo: Mapping[str, Any]) -> str:
    return f" (with {', '.join(f'{k}={v!r}' for k, v in combo.items())})" if combo else ""


def combination_count(dims: Mapping[str, Dimension]) -> int:
    return math.prod(len(corner_values(d)) for d in dims.values())


def _combinations_to_check(dims: Mapping[str, Dimension]) -> tuple[Iterator[dict[str, Any]], Coverage]:
    """Every combination of corner values, or a seeded sample of MAX_VALIDATED_COMBINATIONS of them."""
    total = combination_count(dims)
    if total <= MAX_VALIDATED_COMBINATIONS:
        return enumerate_combinations(dims), Coverage(checked=total, total=total, sampled=False)
    names = list(dims)
    values = [corner_values(dims[n]) for n in names]
    rng = random.Random(0)

    def sample() -> Iterator[dict[str, Any]]:
        for _ in range(MAX_VALIDATED_COMBINATIONS):
            index = rng.randrange(total)
            combo = {}
            for name, vals in zip(names, values, strict=True):
                index, i = divmod(index, len(vals))
                combo[name] = vals[i]
            yield combo

    return sample(), Coverage(checked=MAX_VALIDATED_COMBINATIONS, total=total, sampled=True)


def _run_length(cfg: TrainConfig, cache: dict[tuple[Any, ...], Any]) -> tuple[int, str] | str:
    """``(steps, how)`` a trial with ``cfg`` runs, as the trainer plans it (epochs over the prompt
    pairs, capped by max_steps), or a problem reading its prompt files."""
    key = (cfg.safe_prompts, cfg.unsafe_prompts, cfg.max_pairs)
    if key not in cache:
        try:
            cache[key] = max(len(load_prompts(cfg.safe_prompts, limit=cfg.max_pairs)),
                             len(load_prompts(cfg.unsafe_prompts, limit=cfg.max_pairs)))
        except SageError as exc:
            cache[key] = f"prompts: {exc}"
    pairs = cache[key]
    if isinstance(pairs, str):
        return pairs
    per_epoch = math.ceil(pairs / cfg.batch_size)
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None and cfg.max_steps <= total:
        return cfg.max_steps, f"max_steps={cfg.max_steps}"
    return total, (f"epochs={cfg.epochs} x {per_epoch} steps per epoch: {pairs} prompt pairs at "
                   f"batch_size={cfg.batch_size}")

