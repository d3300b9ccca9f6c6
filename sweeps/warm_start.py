"""Warm starts: seed a sweep's search with the stored results of an earlier sweep.

``sage sweep run SPEC --warm-start DIR`` (or ``search.warm_start: DIR`` in the spec) reads the
earlier sweep folder ``DIR`` (its saved ``spec.yaml``, ``sweep.json`` and results store, through
:class:`analysis.store.ResultStore`) and turns every trial it holds into a :class:`PriorTrial`:
its parameters in this spec's space, its final objective values and its objective values at each
evaluated step.

What is checked before anything launches (one line naming what differs, exit 2):

- the earlier sweep trained the same encoder on the same prompt data and evaluated on the same
  text-evaluation prompts (:data:`CONTEXT_FIELDS` of the resolved base configurations);
- it ranked the same objectives (metric and direction);
- it holds at least one usable trial.

Each earlier trial is then matched against this spec: it is used when its parameters lie in this
spec's space and every other training setting equals what this sweep would run with those
parameters (settings that only say where or how often a run is saved or evaluated are ignored,
:data:`NOT_A_SETTING`). The others are dropped, counted by reason in :attr:`Prior.dropped`, which
the runner prints before the sweep starts. Failed trials are never used.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_core.errors import ConfigError, SageError

from .resolved_trial import hyperparameter_columns
from .space import Dimension, Grid
from .spec import SweepSpec, base_train_config, trial_values

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
    every text evaluation it reported (the last one included).
    """

    params: dict[str, Any]
    metrics: dict[str, float]
    rungs: dict[int, dict[str, float]]

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
    from sage_core.config import load_config

    return load_config(overrides=dict(values)).to_dict()


def _context_line(source: str, earlier: SweepSpec, spec: SweepSpec) -> str | None:
    """What makes the earlier sweep's results another experiment (None: nothing)."""
    old, new = _resolved(base_train_config(earlier)), _resolved(base_train_config(spec))
    for name in CONTEXT_FIELDS:
        if not _same(old.get(name), new.get(name)):
            return (f"{source} trained with {name}={old.get(name)!r}, this spec with {name}={new.get(name)!r}; "
                    "a warm start needs the same encoder, prompt data and text evaluation")
    was = {(o.metric, o.resolved_mode) for o in earlier.objectives}
    now = {(o.metric, o.resolved_mode) for o in spec.objectives}
    if was != now:
        fmt = lambda s: ", ".join(f"{m} ({mode})" for m, mode in sorted(s))  # noqa: E731
        return f"{source} ranked objectives [{fmt(was)}], this spec ranks [{fmt(now)}]; use the same objectives"
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


def _match(row: Mapping[str, Any], spec: SweepSpec, base: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The trial's params in ``spec``'s space, or None and why it does not belong to this sweep."""
    params = {}
    for name, dim in spec.dimensions().items():
        value = row.get(name)
        if not _in_space(dim, value):
            kind = "grid" if isinstance(dim, Grid) else dim.kind
            return None, f"{name}={value!r} outside this spec's space ({kind} {getattr(dim, kind)})"
        params[name] = _space_value(dim, value)
    expected = hyperparameter_columns({k: v for k, v in _resolved(trial_values(base, params, spec.variants)).items()
                                       if k not in NOT_A_SETTING and k not in CONTEXT_FIELDS})
    for name, want in expected.items():
        if want is not None and name in row and not _same(row[name], want):
            return None, f"{name}={row[name]!r} where this spec trains with {want!r}"
    return params, ""


def _objective_values(row: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, float]:
    out = {}
    for m in metrics:
        v = row.get(m)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[m] = float(v)
    return out


def _trials(rows: list[dict[str, Any]], spec: SweepSpec) -> tuple[list[tuple[PriorTrial, str]], Counter[str]]:
    """The usable trials with their trial ids, and the others counted by why they are dropped."""
    metrics = spec.objective_metrics()
    by_trial: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("fidelity") == "text":
            by_trial[str(row["trial_id"])].append(row)
    base, kept, dropped = base_train_config(spec), [], Counter[str]()
    for tid in sorted(by_trial):
        steps = sorted(by_trial[tid], key=lambda r: int(r["step"]))
        last = steps[-1]
        if last.get("status") == "failed":
            dropped["failed in the earlier sweep"] += 1
            continue
        params, why = _match(last, spec, base)
        if params is None:
            dropped[why] += 1
            continue
        rungs = {int(r["step"]): vals for r in steps if (vals := _objective_values(r, metrics))}
        final = _objective_values(last, metrics) if last.get("status") == "finished" else {}
        kept.append((PriorTrial(params=params, metrics=final if len(final) == len(metrics) else {}, rungs=rungs), tid))
    return kept, dropped


def load_prior(source: str, spec: SweepSpec) -> Prior:
    """The usable trials of the sweep folder ``source`` for ``spec``; a :class:`ConfigError` (one
    line, ``search.warm_start: ...``) when it is no sweep, another experiment, or holds no usable
    trial. Reads only; writes nothing."""
    from .sweep_dir import SweepDir

    folder = SweepDir.at(source)
    if not folder.is_uri and not Path(folder.root).is_dir():
        raise _bad(f"{source!r} is not a folder; give the storage folder of an earlier sweep (its --storage)")
    try:
        earlier, meta = folder.load()
        rows = folder.rows(str(meta["sweep_id"])) if folder.store().files() else []
    except SageError as exc:
        raise _bad(f"{source!r} cannot be read as a sweep folder: {exc}") from None
    if Path(folder.root).resolve() == Path(spec.storage).resolve():
        raise _bad(f"{source!r} is this sweep's own storage; give an earlier sweep's folder")
    if (line := _context_line(source, earlier, spec)) is not None:
        raise _bad(line)
    kept, dropped = _trials(rows, spec)
    if not kept:
        why = "; ".join(f"{k} ({n})" for k, n in sorted(dropped.items())) or "it holds no results"
        raise _bad(f"no trial of {source!r} fits this spec: {why}")
    stored = tuple(tuple(r for r in rows if str(r["trial_id"]) == tid) for _, tid in kept)
    return Prior(source=source, sweep_id=str(meta["sweep_id"]), trials=tuple(t for t, _ in kept),
                 dropped=dict(dropped), stored=stored)


def load_and_plan(spec: SweepSpec) -> tuple[Prior, Any]:
    """``(prior, search plan)`` for a spec with ``search.warm_start``: :func:`load_prior`, then the
    search built with it (which refuses a grid with nothing left to run). ``sage sweep run`` and
    ``sage sweep validate`` both call this before anything is written."""
    from .search import build_search

    if not spec.search.warm_start:
        raise _bad("not set")
    prior = load_prior(spec.search.warm_start, spec)
    return prior, build_search(spec, prior=prior.trials)
