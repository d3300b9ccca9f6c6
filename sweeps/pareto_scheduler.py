"""Pareto-aware successive halving: a multi-objective Tune scheduler.

Ray's built-in schedulers (ASHA, HyperBand, PBT) rank trials by one metric. Safety alignment has
two that pull apart (attack rate down, utility up), so at each rung this scheduler ranks the
trials seen there by non-dominated sorting and, inside a front, by crowding distance (NSGA-II's
order), and keeps a trial while fewer than ``ceil(n / eta)`` of the ``n`` trials recorded at that
rung are strictly ahead of it. Like ASHA it decides asynchronously when a trial reaches a rung,
so no trial ever waits (or is paused and restored) for slower ones.

The ranking (non-dominated sorting, crowding distance, every objective turned into minimisation
with its direction from the metric registry, as Optuna does) is :mod:`analysis.dominance`, the one
Pareto implementation that the image stage, ``sage sweep status`` and ``sage pareto`` use too.

Intervals. Every graded text objective comes with a seeded bootstrap 95% interval
(``<metric>_lo``/``<metric>_hi``), but the scheduler ranks the point estimates only, as NSGA-II
and ASHA do: a trial dominates another when its estimates are at least as good in every
objective and better in one, however much their intervals overlap. What that implies:

- trials whose intervals overlap are ordered by noise in the prompt sample (another
  ``sample_seed`` could swap them); with ``eta`` = 2 a trial whose interval overlaps a survivor's
  can be pruned, so a pruned trial is "not ahead at this rung", not "shown worse";
- equal estimates do not dominate each other and share one crowding distance, so trials that
  report identical values at a rung (configurations whose only difference has not acted yet) get
  the same decision whatever their arrival order; crowding distance prefers the ends of a front;
- the image stage ranks survivors the same way, so ``sage sweep status``, ``sage pareto`` and
  the report print each objective as ``value [lo, hi]``: read a front whose members' intervals
  overlap as one group, not as an order. Use a larger ``text_eval`` sample (or ``eta`` closer to
  the number of trials) when decisions must be safer than the intervals allow.

``noise_aware=True`` (off by default) makes the rung rule interval-aware: a trial outside the top
``1/eta`` is stopped only if it is also *dominated beyond noise*, i.e. some trial inside the top
``1/eta`` at that rung is better than it in every objective by more than the two trials' interval
half-widths added (``(hi - lo) / 2`` of ``<metric>_lo``/``<metric>_hi`` in the result; 0 where a
result lacks them, which falls back to the point estimates), so their intervals are disjoint in
every objective. See :func:`dominated_beyond_noise`.

Seed noise. When the spec asks for ``seeds: N``, trials that share a configuration and differ in
``seed`` are repeats; :class:`SeedNoiseWatch` estimates each objective's signal share at every step
where at least three configurations have two seeds reported (``analysis.reliability``), and prints
one warning line per objective the first time it is below 0.5: the rungs are then ranking mostly
seed noise.

State. The rung records live in memory; :class:`SchedulerStateCallback` writes them to the JSON
state file when Tune saves its experiment state (Tune calls ``Callback.get_state`` from
``TuneController.save_to_dir``, next to the trial states; Ray 2.x never calls
``TrialScheduler.save``/``restore``). The file therefore holds exactly the decisions behind the
trial states a resumed sweep restarts from: a result reported after that save is re-reported from
the trial's last checkpoint by the resumed driver and decided there, once.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from ray.tune.schedulers import FIFOScheduler

from analysis.dominance import minimised_rows, objective_signs, ranks_and_crowding
from analysis.reliability import SIGNAL_THRESHOLD, low_signal_line, signal_share
from sage_core.defs.errors import ConfigError
from sweeps.spec_model import SEED

from .mf_search import build_mf_scheduler
from .scheduler_state import SchedulerStateCallback, _read_widths, read_state, state_callbacks

__all__ = ["strictly_ahead", "keeps_at_rung", "dominated_beyond_noise", "half_widths", "ParetoSuccessiveHalving",
           "SchedulerStateCallback", "state_callbacks", "SeedNoiseWatch", "read_state", "SCHEDULERS", "build_scheduler"]


def strictly_ahead(points: np.ndarray, index: int) -> int:
    """How many rows beat row ``index``: a lower front, or the same front and a larger crowding."""
    ranks, crowd = ranks_and_crowding(points)
    same = ranks == ranks[index]
    return int((ranks < ranks[index]).sum()) + int((crowd[same] > crowd[index]).sum())


def keeps_at_rung(points: np.ndarray, index: int, *, eta: int) -> bool:
    """Row ``index`` survives when fewer than ``ceil(n / eta)`` rows are strictly ahead of it.

    Ties keep the trial being decided, as ASHA keeps a trial exactly at its cutoff.
    """
    n = len(points)
    return strictly_ahead(points, index) < math.ceil(n / eta)


def dominated_beyond_noise(points: np.ndarray, widths: np.ndarray, index: int, *, eta: int) -> bool:
    """True when a row in the top ``ceil(n / eta)`` of the Pareto order (fewer rows strictly
    ahead of it) is below row ``index`` in every (minimised) objective by more than the two rows'
    half-widths added: ``q_j + w_qj < p_j - w_pj`` for every ``j``."""
    ranks, crowd = ranks_and_crowding(points)
    ahead = np.asarray([(ranks < r).sum() + ((ranks == r) & (crowd > c)).sum()
                        for r, c in zip(ranks, crowd, strict=True)])
    top = ahead < math.ceil(len(points) / eta)
    beyond = np.all(points + widths < points[index] - widths[index], axis=1)
    return bool((top & beyond).any())


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def half_widths(result: Mapping[str, Any], *, metrics: Sequence[str]) -> list[float]:
    """``(hi - lo) / 2`` of each metric's ``<metric>_lo``/``<metric>_hi`` in ``result``; 0 (the
    point estimate alone) where either is absent or not finite."""
    out = []
    for m in metrics:
        lo, hi = result.get(f"{m}_lo"), result.get(f"{m}_hi")
        out.append(abs(float(hi) - float(lo)) / 2 if _finite(lo) and _finite(hi) else 0.0)
    return out


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SeedNoiseWatch:
    """Warns once per objective when the repeats of ``seeds: N`` show its signal share below 0.5.

    ``observe`` takes each result with its trial's config (Tune's sampled params): trials whose
    configs are equal apart from ``seed`` are seeds of one configuration.
    """

    MIN_CONFIGS = 3  # configurations with two or more seeds at one step before an estimate is made

    def __init__(self, metrics: Sequence[str], *, warn: Callable[[str], None] | None = None):
        self.metrics = list(metrics)
        self.seen: dict[int, dict[str, tuple[str, list[float]]]] = {}  # step -> trial -> (config, values)
        self.warned: set[str] = set()
        self.warn = warn

    def observe(self, trial_id: str, result: Mapping[str, Any], config: Mapping[str, Any] | None) -> list[str]:
        """Record one result; the warning lines it triggers (also printed)."""
        if not config or SEED not in config or result.get("step") is None:
            return []
        key = json.dumps({k: v for k, v in config.items() if k != SEED}, sort_keys=True, default=str)
        rows = self.seen.setdefault(int(result["step"]), {})
        rows[str(trial_id)] = (key, [float(result.get(m, math.nan)) for m in self.metrics])
        seeds = Counter(k for k, _ in rows.values())
        if sum(n >= 2 for n in seeds.values()) < self.MIN_CONFIGS:
            return []
        lines = []
        for j, metric in enumerate(self.metrics):
            ok = [(k, v[j]) for k, v in rows.values() if math.isfinite(v[j])]
            share = signal_share([v for _, v in ok], [k for k, _ in ok])
            if metric not in self.warned and math.isfinite(share) and share < SIGNAL_THRESHOLD:
                self.warned.add(metric)
                lo, hi = min(seeds.values()), max(seeds.values())
                lines.append(low_signal_line(metric, share=share, seeds=f"{lo}" if lo == hi else f"{lo}-{hi}",
                                             configs=len(seeds), where=f" at step {int(result['step'])}"))
                (self.warn or _print_line)(lines[-1])
        return lines


# --------------------------------------------------------------------------------------------
try:  # Tune is optional for the pure functions above
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
except ImportError:  # pragma: no cover - ray is a dependency of sweeps
    TrialScheduler = object  # type: ignore[assignment,misc]
    Trial = Any  # type: ignore[assignment,misc]


class ParetoSuccessiveHalving(TrialScheduler):
    """Stop a trial at a rung unless its Pareto order puts it in the top ``1/eta`` there.

    Args (keyword-only):
        metrics / modes: the objectives, e.g. ``["concept_auc", "util_sib"]``, ``["min", "max"]``.
        rungs: values of ``time_attr`` where decisions happen; ``None`` = every result whose
            ``time_attr`` is below the trial's ``total_attr`` (i.e. every evaluation but the last).
        eta: reduction factor (>= 2).
        time_attr / total_attr: result keys holding the step and the run length.
        state_path: JSON file the rung records are written to when Tune saves its experiment state
            (through :class:`SchedulerStateCallback`), so a resumed driver keeps them.
        noise_aware: stop a trial outside the top ``1/eta`` only when it is also dominated beyond
            the objectives' bootstrap intervals (module docstring); False (default) = rank the point
            estimates only.
        prior: trials of an earlier sweep (warm start, :class:`sweeps.warm_start.PriorTrial`): their
            values at this scheduler's rungs are recorded there as ``prior:<i>``, so a new trial
            is ranked against them too; they are never decided.
    """

    def __init__(self, *, metrics: Sequence[str], modes: Sequence[str], rungs: Sequence[int] | None = None,
                 eta: int = 3, time_attr: str = "step", total_attr: str = "total_steps",
                 state_path: str | os.PathLike | None = None, noise_aware: bool = False, prior: Sequence[Any] = ()):
        super().__init__()
        if len(metrics) != len(modes) or not metrics:
            raise ValueError(f"metrics={list(metrics)} and modes={list(modes)} must be non-empty and equal length")
        bad = [m for m in modes if m not in ("min", "max")]
        if bad:
            raise ValueError(f"modes={list(modes)}: each must be 'min' or 'max'")
        if eta < 2:
            raise ValueError(f"eta={eta}: must be >= 2")
        self.metrics = list(metrics)
        self.modes = list(modes)
        self._signs = objective_signs(self.metrics, self.modes)  # checked against the metric registry
        self.rungs = sorted(int(r) for r in rungs) if rungs is not None else None
        self.eta = int(eta)
        self.time_attr = time_attr
        self.total_attr = total_attr
        self.state_path = Path(state_path) if state_path else None
        self._metric = self.metrics[0]
        # rung step -> trial id -> minimisation vector, in arrival order
        self.recorded: dict[int, dict[str, list[float]]] = {}
        self.pruned: dict[str, int] = {}
        self.noise_aware = bool(noise_aware)
        # rung step -> trial id -> interval half-widths (noise_aware only), as ``recorded``
        self.widths: dict[int, dict[str, list[float]]] = {}
        self._loaded = False
        self._unsaved = False  # decisions made since the state file was last written
        # Set by a SchedulerStateCallback: Tune's experiment-state saves write the state file. Without
        # one, every decision writes it.
        self.saved_by_tune = False
        self.seed_noise = SeedNoiseWatch(self.metrics)
        for i, trial in enumerate(prior):
            last = max(trial.rungs, default=None) if trial.metrics else None  # its final evaluation
            for step, values in trial.rungs.items():
                if (step in self.rungs) if self.rungs is not None else step != last:
                    vec = minimised_rows([values], metrics=self.metrics, signs=self._signs)[0]
                    self.recorded.setdefault(int(step), {})[f"prior:{i}"] = [float(x) for x in vec]

    # -- persistence --------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.state_path and self.state_path.is_file():
            recorded, pruned = read_state(self.state_path)
            for rung, rows in recorded.items():
                self.recorded.setdefault(rung, {}).update(rows)
            self.pruned.update(pruned)
            if self.noise_aware:
                for rung, rows in _read_widths(self.state_path).items():
                    self.widths.setdefault(rung, {}).update(rows)

    def pruned_trials(self) -> set[str]:
        """Ids of the trials this scheduler stopped at a rung (also those of an earlier driver)."""
        self._load()
        return set(self.pruned)

    def state(self) -> dict[str, Any]:
        """The rung records as JSON-ready data (what the state file holds)."""
        state: dict[str, Any] = {"recorded": {str(k): v for k, v in self.recorded.items()}, "pruned": self.pruned,
                                 "metrics": self.metrics, "modes": self.modes, "eta": self.eta}
        if self.noise_aware:
            state["widths"] = {str(k): v for k, v in self.widths.items()}
        return state

    def write_state(self) -> bool:
        """Write the state file if a decision was made since the last write; True when written.
        Called when Tune saves its experiment state (:class:`SchedulerStateCallback`)."""
        if not self.state_path or not self._unsaved:
            return False
        self._load()  # never overwrite an earlier driver's records with a partial view
        self.save(str(self.state_path))
        self._unsaved = False
        return True

    # -- TrialScheduler -----------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # our objectives come from the constructor

    def _is_rung(self, result: Mapping[str, Any]) -> int | None:
        step = result.get(self.time_attr)
        if step is None:
            return None
        step = int(step)
        if self.rungs is not None:
            return step if step in self.rungs else None
        total = result.get(self.total_attr)
        return step if total is None or step < int(total) else None

    def decide(self, trial_id: str, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for one result (the Tune-free core, used by tests and benches)."""
        self._load()
        rung = self._is_rung(result)
        if rung is None:
            return TrialScheduler.CONTINUE
        if trial_id in self.pruned:
            return TrialScheduler.STOP
        vec = minimised_rows([result], metrics=self.metrics, signs=self._signs)[0]
        rows = self.recorded.setdefault(rung, {})
        rows[trial_id] = [float(x) for x in vec]
        ids = list(rows)
        points, me = np.asarray([rows[i] for i in ids]), ids.index(trial_id)
        keep = keeps_at_rung(points, me, eta=self.eta)
        if self.noise_aware:
            widths = self.widths.setdefault(rung, {})
            widths[trial_id] = half_widths(result, metrics=self.metrics)
            if not keep:
                keep = not dominated_beyond_noise(points, np.asarray([widths.get(i, [0.0] * len(self.metrics))
                                                                      for i in ids]), me, eta=self.eta)
        if not keep:
            self.pruned[trial_id] = rung
        self._unsaved = True
        if not self.saved_by_tune:
            self.write_state()
        return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self.seed_noise.observe(trial.trial_id, result, getattr(trial, "config", None))
        return self.decide(trial.trial_id, result)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        pass

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in tune_controller.get_trials():
                if trial.status == status:
                    return trial
        return None

    def debug_string(self) -> str:
        parts = [f"rung {r}: {len(rows)} seen" for r, rows in sorted(self.recorded.items())]
        return (f"ParetoSuccessiveHalving(eta={self.eta}{', noise_aware' if self.noise_aware else ''}, objectives="
                f"{', '.join(f'{mo} {me}' for me, mo in zip(self.metrics, self.modes, strict=True))}): "
                f"{'; '.join(parts) or 'no rung reached yet'}; {len(self.pruned)} pruned")

    def save(self, checkpoint_path: str) -> None:
        """Tune's ``TrialScheduler.save``: the state as JSON, written to a temporary name and renamed."""
        path = Path(checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), allow_nan=True), encoding="utf-8")
        os.replace(tmp, path)

    def restore(self, checkpoint_path: str) -> None:
        self.recorded, self.pruned = read_state(Path(checkpoint_path))
        if self.noise_aware:
            self.widths = _read_widths(Path(checkpoint_path))
        self._loaded = True


def _pareto_sh(spec: Any, state_path: str | None, *, prior: Sequence[Any] = ()) -> ParetoSuccessiveHalving:
    return ParetoSuccessiveHalving(metrics=spec.objective_metrics(), modes=spec.objective_modes(),
                                   rungs=spec.fidelity.rungs, eta=spec.scheduler.eta, state_path=state_path,
                                   prior=prior)


def _fifo(spec: Any, state_path: str | None, *, prior: Sequence[Any] = ()) -> Any:
    return FIFOScheduler()


# ``scheduler.kind`` of a sweep spec -> (spec, state file or None, *, prior) -> a Tune TrialScheduler.
SCHEDULERS: dict[str, Callable[..., Any]] = {"pareto_sh": _pareto_sh, "fifo": _fifo}


def build_scheduler(spec: Any, state_path: str | None, *, prior: Sequence[Any] = ()) -> Any:
    """The Tune scheduler ``spec.scheduler.kind`` names; ``state_path``: where a Pareto scheduler
    writes its rung records (None on object storage); ``prior``: an earlier sweep's trials (warm start)."""
    if getattr(spec.search, "algorithm", None) == "ehvi" and spec.search.probe:  # it pauses and resumes trials

        return build_mf_scheduler(spec, state_path, prior=prior)
    kind = spec.scheduler.kind
    if kind not in SCHEDULERS:
        raise ConfigError(f"scheduler.kind={kind!r}: unknown; known: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[kind](spec, state_path, prior=prior)
