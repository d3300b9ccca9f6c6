"""Warm starts: seed a sweep's search with the stored results of an earlier sweep.

``sage sweep run SPEC --warm-start DIR`` (or ``search.warm_start: DIR`` in the spec) reads the
earlier sweep folder ``DIR`` (its saved ``spec.yaml``, ``sweep.json`` and results store, through
:class:`analysis.store.ResultStore`) and turns every trial it holds into a :class:`PriorTrial`:
its parameters in this spec's space, its final objective values and its objective values at each
evaluated step.

What is checked before anything launches (one line naming what differs, exit 2):

- the earlier sweep trained the same encoder on the same prompt data and evaluated on the same
  text-evaluation prompts (:data:`CONTEXT_FIELDS` of the resolved base configurations);
- it ranked the same objectives (metric and direction), those of the robust / proximal stage
  measured with the same stage settings;
- it holds at least one usable trial.

Each earlier trial is then matched against this spec: it is used when its parameters lie in this
spec's space and every other training setting equals what this sweep would run with those parameters
(the training seed excepted, unless the search is a grid, which reuses runs: a model-based search
learns from another seed's results too; settings that only say where or how often a run is saved or
evaluated are ignored, :data:`NOT_A_SETTING`). The others are dropped, counted by reason in
:attr:`Prior.dropped`, which the runner prints before the sweep starts. Failed trials are never
used. The earlier sweep's trials include those its own warm start reused (their rows, copied into
its store under the sweep id that produced them), so warm starts chain. An objective whose ranking
over the trials used is mostly training-seed noise gets a warning line, never a refusal
(:mod:`sweeps.warm_start_signal`).
"""

from __future__ import annotations

import functools
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pyarrow import ArrowException

from sage_core.defs import metrics as metric_registry
from sage_core.defs.config import TrainConfig, load_config
from sage_core.defs.errors import ConfigError, SageError

from .resolved_trial import hyperparameter_columns, point_key
from .robust_stage import stage_builders
from .search import build_search
from .space import Dimension, Grid
from .spec import SweepSpec, base_train_config, trial_values
from .sweep_dir import SweepDir
from .sweep_plan import SweepPlan, plan_of
from .warm_start_signal import seed_noise_lines

__all__ = ["PriorTrial", "Prior", "load_prior", "load_and_plan", "CONTEXT_FIELDS", "NOT_A_SETTING", "WHERE"]

WHERE = "search.warm_start"  # the spec key (``--warm-start`` sets it)

#: What the earlier sweep must share with this one: the encoder, the training and diagnostic prompt
#: data, and the text-evaluation settings (prompt sets, samples, seeds) behind every objective.
CONTEXT_FIELDS = ("encoder", "concept", "safe_prompts", "unsafe_prompts", "max_pairs", "max_length",
                  "diag_prompts", "diag_samples", "diag_k", "text_eval")

#: TrainConfig fields that do not make another configuration: where and how often a run is saved
#: or evaluated, and where it ran.
NOT_A_SETTING = frozenset({"cache_dir", "eval_every", "checkpoint_every", "keep_checkpoints", "device",
                           "precision", "zero_stage", "micro_batch_size"})


@dataclass(frozen=True)
class PriorTrial:
    """One trial of an earlier sweep, as a search algorithm can use it.

    ``params``: its values of this spec's dimensions; ``metrics``: its final objective values
    (empty when it did not finish, e.g. pruned at a rung); ``rungs``: step -> objective -> value at
    every text evaluation it reported (the last one included); ``same_run``: every training setting,
    the training seed included, is what this sweep would train for these params, so running them
    again would repeat this run (a grid's matches always are; a model-based search also takes other
    seeds' runs).
    """

    params: dict[str, Any]
    metrics: dict[str, float]
    rungs: dict[int, dict[str, float]]
    same_run: bool = False

    @property
    def finished(self) -> bool:
        return bool(self.metrics)


@dataclass(frozen=True)
class Prior:
    """The usable trials of an earlier sweep, and why the others were dropped."""

    source: str
    sweep_id: str
    trials: tuple[PriorTrial, ...]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> trials
    stored: tuple[tuple[dict[str, Any], ...], ...] = ()  # each trial's rows in the earlier store

    def rows_of(self, trials: Sequence[PriorTrial]) -> list[dict[str, Any]]:
        """The stored rows (every fidelity) of some of :attr:`trials`, as the earlier store holds them."""
        index = {id(t): i for i, t in enumerate(self.trials)}
        return [row for t in trials for row in self.stored[index[id(t)]]]

    def summary(self) -> str:
        done = sum(t.finished for t in self.trials)
        line = (f"warm start from {self.source} ({self.sweep_id}): {len(self.trials)} earlier trial(s) "
                f"({done} finished, {len(self.trials) - done} stopped early)")
        if self.dropped:
            line += f"; {sum(self.dropped.values())} dropped: " + "; ".join(
                f"{why} ({n})" for why, n in sorted(self.dropped.items()))
        return line


def _bad(what: str) -> ConfigError:
    return ConfigError(f"{WHERE}: {what}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _resolved(values: Mapping[str, Any]) -> dict[str, Any]:
    return load_config(overrides=dict(values)).to_dict()


@functools.cache
def _defaults() -> dict[str, Any]:
    """TrainConfig's defaults, resolved once (read only)."""
    return _resolved({})


def _context_line(source: str, earlier: SweepSpec, spec: SweepSpec) -> str | None:
    """What makes the earlier sweep's results another experiment (None: nothing)."""
    old, new = _resolved(base_train_config(earlier)), _resolved(base_train_config(spec))
    for name in CONTEXT_FIELDS:
        if not _same(old.get(name), new.get(name)):
            return (f"{source} trained with {name}={old.get(name)!r}, this spec with {name}={new.get(name)!r}; "
                    "a warm start needs the same encoder, prompt data and text evaluation")
    if (line := _stage_line(source, earlier, spec)) is not None:
        return line
    was = {(o.metric, o.resolved_mode) for o in earlier.objectives}
    now = {(o.metric, o.resolved_mode) for o in spec.objectives}
    if was != now:
        fmt = lambda s: ", ".join(f"{m} ({mode})" for m, mode in sorted(s))  # noqa: E731
        return f"{source} ranked objectives [{fmt(was)}], this spec ranks [{fmt(now)}]; use the same objectives"
    return None


def _stage_line(source: str, earlier: SweepSpec, spec: SweepSpec) -> str | None:
    """An objective measured by the robust, proximal or attack stage means what that stage's settings
    (``fidelity.robust`` / ``fidelity.proximal`` / ``fidelity.attack``) make it mean: they must agree
    as well."""
    builders = stage_builders()
    stages = {str(getattr(metric_registry.lookup(o.metric), "fidelity", "")) for o in spec.objectives}
    for stage in sorted(stages & set(builders)):
        # the attack stage's settings without ``at`` (where it runs is no setting of what it measures)
        old, new = (s.fidelity.attack_settings() if stage == "attack" else getattr(s.fidelity, stage)
                    for s in (earlier, spec))
        if old is None or new is None or builders[stage](dict(old)) != builders[stage](dict(new)):
            return (f"{source} measured its {stage} objectives with fidelity.{stage}={old!r}, this spec with "
                    f"fidelity.{stage}={new!r}; a warm start needs the same settings behind every objective")
    return None


def _in_space(dim: Dimension, value: Any) -> bool:
    if value is None:
        return False
    if hasattr(dim, "values"):
        column = hyperparameter_columns({"v": value})["v"]
        return any(_same(hyperparameter_columns({"v": v})["v"], column) for v in dim.values)
    low, high = dim.bounds
    if dim.kind == "int" and not float(value).is_integer():
        return False
    return bool(low <= value <= high)


def _space_value(dim: Dimension, value: Any) -> Any:
    """The dimension's own value for a stored column value (lists come back as ``"1,2"`` text)."""
    if hasattr(dim, "values"):
        column = hyperparameter_columns({"v": value})["v"]
        return next(v for v in dim.values if _same(hyperparameter_columns({"v": v})["v"], column))
    return int(value) if dim.kind == "int" else float(value)


def _stored(row: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> Any:
    """The earlier trial's value of setting column ``name``. A column its code did not write (absent,
    or null where the setting cannot be None) reads as today's default: a new setting defaults to the
    behaviour from before it existed (``lambda_adv`` 0 = off)."""
    if name in row and row[name] is not None:
        return row[name]
    field = TrainConfig.model_fields.get(name)
    nullable = field is None or type(None) in get_args(field.annotation)
    return row[name] if name in row and nullable else defaults.get(name)


def _settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings of resolved TrainConfig ``values`` (``to_dict()``), as store columns."""
    return hyperparameter_columns({k: v for k, v in values.items()
                                   if k not in NOT_A_SETTING and k not in CONTEXT_FIELDS})


def _configured(row: Mapping[str, Any], earlier: SweepSpec, earlier_base: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the earlier spec gave the trial of ``row`` (as store columns; empty if they cannot
    be rebuilt): a setting left None there is one the trainer fills in (``concept_guidance_scale`` from
    ``concept_guidance_ratio``, on the encoder and data the context check compared) and reports."""
    params = {n: _space_value(d, row.get(n)) for n, d in earlier.dimensions().items() if _in_space(d, row.get(n))}
    try:
        return _settings(_resolved(trial_values(earlier_base, params, earlier.variants)))
    except SageError:
        return {}


def _setting_mismatch(row: Mapping[str, Any], expected: Mapping[str, Any], configured: Mapping[str, Any], *,
                      ignore: frozenset[str] = frozenset()) -> str | None:
    """The first training setting of an earlier trial's ``row`` that differs from ``expected`` (this
    spec's, as store columns), None when all agree. A setting both specs leave None agrees whatever
    the trainer filled in (``configured``: the earlier spec's). A nested setting (``adv_attack.steps``)
    the earlier trial set and this spec leaves unset differs too."""
    defaults = _settings(_defaults())
    for name, want in expected.items():
        if name in ignore:
            continue
        got = _stored(row, name, defaults)
        if not _same(got, want) and not (want is None and name in configured and configured[name] is None):
            return f"{name}={got!r} where this spec trains with {want!r}"
    nested = {k for k, v in _defaults().items() if isinstance(v, dict)} - NOT_A_SETTING - set(CONTEXT_FIELDS)
    for name, got in row.items():
        if got is not None and name.split(".", 1)[0] in nested and name not in expected:
            return f"{name}={got!r} where this spec leaves it unset"
    return None


def _match(row: Mapping[str, Any], spec: SweepSpec, plan: SweepPlan, earlier: SweepSpec,
           earlier_base: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str, bool]:
    """The trial's params in ``spec``'s space (or None and why it does not belong to this sweep), and
    whether it is the very run this sweep would make of them (the training seed included)."""
    params = {}
    for name, dim in plan.dimensions.items():
        value = row.get(name)
        if not _in_space(dim, value):
            kind = "grid" if isinstance(dim, Grid) else dim.kind
            return None, f"{name}={value!r} outside this spec's space ({kind} {getattr(dim, kind)})", False
        params[name] = _space_value(dim, value)
    # A model-based search learns from another training seed's results as well (the seed is noise
    # around the same configuration); a grid reuses runs instead, so its runs must be the same runs.
    ignore = frozenset() if spec.search.algorithm == "grid" else frozenset({"seed"})
    planned = plan.configs.get(point_key(params))  # this sweep's config of these params, if planned
    expected = planned.to_dict() if planned is not None else _resolved(trial_values(plan.base, params, spec.variants))
    settings, configured = _settings(expected), _configured(row, earlier, earlier_base)
    why = _setting_mismatch(row, settings, configured, ignore=ignore)
    if why:
        return None, why, False
    return params, "", not ignore or _setting_mismatch(row, settings, configured) is None


def _objective_values(row: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, float]:
    out = {}
    for m in metrics:
        v = row.get(m)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[m] = float(v)
    return out


def _other_context(row: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    """Why a row another sweep wrote into the earlier sweep's store (rows its own warm start reused)
    comes from another experiment than ``context`` (this spec's, as store columns); None if not."""
    for name, want in context.items():
        if not _same(row.get(name), want):
            return f"rows of sweep {row['sweep_id']} trained with {name}={row.get(name)!r}"
    return None


def _trials(rows: list[dict[str, Any]], spec: SweepSpec, earlier: SweepSpec, *, sweep_id: str,
            plan: SweepPlan) -> tuple[list[tuple[PriorTrial, tuple[str, str]]], Counter[str]]:
    """The usable trials with their (sweep id, trial id), and the others counted by why they are
    dropped. Rows of another sweep id are those the earlier sweep's own warm start reused: they count
    as its trials when they were trained in this spec's context."""
    metrics = spec.objective_metrics()
    context = hyperparameter_columns({k: v for k, v in _resolved(plan.base).items() if k in CONTEXT_FIELDS})
    by_trial: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("fidelity") == "text":
            by_trial[(str(row["sweep_id"]), str(row["trial_id"]))].append(row)
    earlier_base, kept, dropped = base_train_config(earlier), [], Counter[str]()
    for key in sorted(by_trial, key=lambda k: (k[0] != sweep_id, k)):  # the earlier sweep's own trials first
        steps = sorted(by_trial[key], key=lambda r: int(r["step"]))
        last = steps[-1]
        if last.get("status") == "failed":
            dropped["failed in the earlier sweep"] += 1
            continue
        if key[0] != sweep_id and (why := _other_context(last, context)) is not None:
            dropped[why] += 1
            continue
        params, why, same_run = _match(last, spec, plan, earlier, earlier_base)
        if params is None:
            dropped[why] += 1
            continue
        rungs = {int(r["step"]): vals for r in steps if (vals := _objective_values(r, metrics))}
        final = _objective_values(last, metrics) if last.get("status") == "finished" else {}
        kept.append((PriorTrial(params=params, metrics=final if len(final) == len(metrics) else {}, rungs=rungs,
                                same_run=same_run), key))
    return kept, dropped


def _same_folder(a: str, b: str) -> bool:
    return a == b if "://" in a or "://" in b else Path(a).resolve() == Path(b).resolve()


def load_prior(source: str, spec: SweepSpec, *, plan: SweepPlan | None = None) -> Prior:
    """The usable trials of the sweep folder ``source`` for ``spec`` (``plan``: its plan, default
    :func:`~sweeps.sweep_plan.plan_of`); a :class:`ConfigError` (one line, ``search.warm_start:
    ...``) when it is no sweep, another experiment, or holds no usable trial. Reads only; writes nothing."""
    folder = SweepDir.at(source)
    if not folder.is_uri and not Path(folder.root).is_dir():
        raise _bad(f"{source!r} is not a folder; give the storage folder of an earlier sweep (its --storage)")
    if _same_folder(folder.root, SweepDir.at(spec.storage).root):
        raise _bad(f"{source!r} is this sweep's own storage; give an earlier sweep's folder")
    try:
        earlier, meta = folder.load()
        rows = folder.store().read().to_pylist() if folder.store().files() else []
    except SageError as exc:  # StorageError among them: a damaged results store
        raise _bad(f"{source!r} cannot be read as a sweep folder: {exc}") from None
    except (OSError, ArrowException) as exc:  # object storage that cannot be reached, or an unknown scheme
        raise _bad(f"{source!r} cannot be read ({type(exc).__name__}: {exc})") from None
    if (line := _context_line(source, earlier, spec)) is not None:
        raise _bad(line)
    kept, dropped = _trials(rows, spec, earlier, sweep_id=str(meta["sweep_id"]),
                            plan=plan if plan is not None else plan_of(spec))
    if not kept:
        why = "; ".join(f"{k} ({n})" for k, n in sorted(dropped.items())) or "it holds no results"
        raise _bad(f"no trial of {source!r} fits this spec: {why}")
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[(str(row["sweep_id"]), str(row["trial_id"]))].append(row)
    stored = tuple(tuple(by_key[key]) for _, key in kept)
    return Prior(source=source, sweep_id=str(meta["sweep_id"]), trials=tuple(t for t, _ in kept),
                 dropped=dict(dropped), stored=stored)


def load_and_plan(spec: SweepSpec, *, plan: SweepPlan | None = None) -> tuple[Prior, Any]:
    """``(prior, search plan)`` for a spec with ``search.warm_start``: :func:`load_prior`, then the
    search built with it (which refuses a grid, ``ehvi``, or finite-space ``tpe`` / ``nsga2`` search with
    nothing left to run). ``sage sweep run`` and
    ``sage sweep validate`` both call this before anything is written. Once both succeed, each
    objective whose ranking in the earlier sweep is mostly seed noise gets a warning line
    (:func:`~sweeps.warm_start_signal.seed_noise_lines`) on stderr."""
    if not spec.search.warm_start:
        raise _bad("not set")
    plan = plan if plan is not None else plan_of(spec)
    prior = load_prior(spec.search.warm_start, spec, plan=plan)
    search = build_search(spec, prior=prior.trials, dims=plan.dimensions)
    for line in seed_noise_lines(prior, spec.objective_metrics()):
        print(line, file=sys.stderr, flush=True)
    return prior, search
