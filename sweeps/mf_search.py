"""Expected-hypervolume search (``search.algorithm: ehvi``): run the proposed configurations in the
order of the hypervolume a surrogate expects each to add, optionally after a synchronous probe rung.

Why. On the recorded SAGE curves (bench/RESULTS.md, "Search on recorded curves") the plain grid in a
random order beats both asynchronous pruners (ours and MO-ASHA) once evaluations are counted: early
rung values rank the finals loosely, and configurations that differ only in a regularizer that has
not acted yet look identical there. What helps is choosing *which* configuration to finish next.

Tune's variant generator proposes the trials (the grid points x ``num_samples``, or ``num_samples``
draws); :class:`ParetoGainModel` is the rule that picks which runs next, applied by
:class:`sweeps.ehvi_search.EhviSearcher` (``suggest``; the default) or, with a probe, by the
scheduler :class:`MultiFidelityPareto` below (``choose_trial_to_run`` over PAUSED trials):

1. **Start.** Until :data:`MIN_FIT` trials have finished, the proposals in their seeded random
   order: with nothing to learn from yet, the search is the grid run in a random order. (A
   space-filling start, farthest point first, was measured and not kept: +0.07 of the front at 35%
   of the compute on one objective pair, -0.06 to -0.09 on another; bench/RESULTS.md.)
2. **Expected gain.** Then the proposal with the largest expected hypervolume gain: a Monte Carlo
   mean over the surrogate's predictive distribution of its final objectives, against the front of
   the finished trials plus the predicted finals of the trials still running (a "believer", so
   parallel workers do not all pick the same region). The surrogate is scikit-learn's Gaussian
   process, one per objective, over the hyperparameters (scaled to [0, 1], log scale for positive
   ones spanning a factor of 10, one-hot otherwise; Matern 5/2, a length scale per feature, a noise
   term; hyperparameters re-optimised when the rows grew by a quarter).
3. **The end.** With ``min_gain`` = 0 (the default) every proposal runs in the end (or was reused
   from a warm start's earlier run of the same seed), so the final front is the grid's;
   ``min_gain`` > 0 stops the remaining proposals once none is expected to add that share of the
   front's hypervolume and nothing running could change it.

Probe (``probe=True``, ``search.probe``). Every proposal first runs to ``first_rung`` and is PAUSED
there (Tune keeps its checkpoint); only when every probe has reported are finishers resumed, by
expected gain, with a second surrogate that predicts the change from the rung value to the end
(fitted on finished trials; before :data:`MIN_FIT` of them the rung values stand for the finals).
Off by default: on the recorded curves the probes cost 18% of the grid and told little.

Warm start. ``prior``: trials of an earlier sweep with the same encoder, data and objectives
(objects with ``.params``, ``.metrics`` (final values; empty when it was stopped early) and
``.rungs`` (step -> values); see :class:`PriorTrial`). Their finals train the surrogate from the
first pick, so no random start is needed; they never enter this sweep's own front.

Objectives are turned into minimisation with their registry direction (:mod:`analysis.dominance`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from analysis.dominance import hypervolume, objective_signs

__all__ = ["PriorTrial", "ParetoGainModel", "MultiFidelityPareto", "hv_gains", "build_mf_scheduler", "MIN_FIT"]

MIN_FIT = 3  # rows a surrogate needs before it is fitted
MIN_GAIN = 0.0  # default: never stop early (every proposal runs in the end; module docstring)
SAMPLES = 64  # Monte Carlo draws per candidate
GP_ITERATIONS = 50  # L-BFGS-B iterations per hyperparameter fit (each starts from the previous fit)
REF_MARGIN = 0.1


class PriorTrial(Protocol):
    """One finished trial of an earlier sweep (what a warm start reads)."""

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def metrics(self) -> Mapping[str, float]: ...

    @property
    def rungs(self) -> Mapping[int, Mapping[str, float]]: ...


def _encode(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    """Hyperparameters as features in [0, 1]: numbers min-max scaled over ``rows`` (log scale when all
    positive and spanning a factor of 10 or more), anything else one-hot."""
    cols: list[np.ndarray] = []
    for name in names:
        vals = [r.get(name) for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            x = np.asarray(vals, dtype=float)
            if (x > 0).all() and x.max() >= 10 * x.min():
                x = np.log(x)
            span = x.max() - x.min()
            cols.append(((x - x.min()) / span if span > 0 else np.zeros_like(x))[:, None])
        else:
            levels = sorted({repr(v) for v in vals})
            cols.append(np.asarray([[repr(v) == lv for lv in levels] for v in vals], dtype=float))
    return np.hstack(cols) if cols else np.zeros((len(rows), 0))


def _gp(x: np.ndarray, y: np.ndarray, *, seed: int, start: list[Any] | None = None, optimise: bool = True) -> Any:
    """One scikit-learn GP per column of ``y`` (Matern 5/2 with a length scale per feature, plus noise);
    ``start``: GPs fitted earlier on fewer rows, whose kernel hyperparameters start the optimiser (or
    are kept as they are, ``optimise=False``: the posterior is conditioned on the new rows only)."""
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]  # lazy: scikit-learn (~0.7 s)
    from sklearn.gaussian_process import GaussianProcessRegressor  # type: ignore[import-untyped]  # lazy: sklearn
    from sklearn.gaussian_process.kernels import (  # type: ignore[import-untyped]  # lazy: sklearn
        ConstantKernel,
        Matern,
        WhiteKernel,
    )

    kernel = (ConstantKernel(1.0, (1e-3, 1e2)) * Matern(np.ones(x.shape[1]), (1e-2, 1e2), nu=2.5)
              + WhiteKernel(1e-2, (1e-6, 1.0)))
    with warnings.catch_warnings():  # a length scale at its bound is expected with a handful of rows
        warnings.simplefilter("ignore", ConvergenceWarning)
        return [GaussianProcessRegressor(start[k].kernel_ if start else kernel, normalize_y=True, random_state=seed,
                                         optimizer=_lbfgsb if optimise else None).fit(x, col)
                for k, col in enumerate(y.T)]


def _lbfgsb(obj_func: Any, initial_theta: Any, bounds: Any) -> tuple[np.ndarray, float]:
    """scikit-learn's own optimiser (L-BFGS-B on the log marginal likelihood) with at most
    :data:`GP_ITERATIONS` iterations: each fit starts from the previous one's hyperparameters."""
    from scipy.optimize import minimize  # lazy: scipy (~0.3 s), only for the acquisition optimiser

    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                   options={"maxiter": GP_ITERATIONS})
    return res.x, float(res.fun)


def _predict(models: list[Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = [m.predict(x, return_std=True) for m in models]
    return np.stack([o[0] for o in out], 1), np.stack([o[1] for o in out], 1)


def hv_gains(front: np.ndarray, points: np.ndarray, ref: Sequence[float]) -> np.ndarray:
    """Hypervolume added to ``front`` (minimisation rows) by each row of ``points`` (any leading shape),
    alone. Two objectives: the area of ``[p, ref]`` above the front's staircase, vectorised; more:
    :func:`analysis.dominance.hypervolume` per point."""
    r = np.asarray(ref, dtype=float)
    if points.shape[-1] != 2:
        base = hypervolume(front, list(r)) if len(front) else 0.0
        flat = points.reshape(-1, points.shape[-1])
        return np.asarray([hypervolume(np.vstack([front, p[None]]), list(r)) - base
                           for p in flat]).reshape(points.shape[:-1])
    inside = front[np.all(front < r, axis=1)] if len(front) else np.zeros((0, 2))
    inside = inside[np.argsort(inside[:, 0], kind="stable")]
    # segment i spans [left_i, right_i) in the first objective; the front covers heights >= height_i there
    left = np.concatenate([[-np.inf], inside[:, 0]])
    right = np.concatenate([inside[:, 0], [r[0]]])
    height = np.minimum.accumulate(np.concatenate([[r[1]], inside[:, 1]]))
    px, py = points[..., :1], points[..., 1:]
    width = np.clip(np.minimum(right, r[0]) - np.maximum(left, px), 0.0, None)
    return (width * np.clip(height - py, 0.0, None)).sum(axis=-1)


class ParetoGainModel:
    """Which candidate next, by expected hypervolume gain (pure: no Tune).

    Rows are minimisation vectors. ``observe_rung`` / ``observe_final`` record a trial's first-rung
    and final objectives; ``choose`` returns the candidate with the largest expected gain (or
    ``None`` when none reaches ``min_gain`` of the current front's hypervolume).
    """

    def __init__(self, *, metrics: Sequence[str], modes: Sequence[str] | None = None,
                 prior: Sequence[PriorTrial] = (), first_rung: int | None = None, seed: int = 0,
                 min_gain: float = MIN_GAIN, samples: int = SAMPLES):
        self.metrics = list(metrics)
        self.signs = objective_signs(self.metrics, modes)
        self.seed, self.min_gain, self.samples = seed, float(min_gain), int(samples)
        self.params: dict[str, dict[str, Any]] = {}
        self.rung: dict[str, np.ndarray] = {}
        self.final: dict[str, np.ndarray] = {}
        for i, p in enumerate(prior):  # prior rows live beside this sweep's under their own ids
            key = f"prior:{i}"
            self.params[key] = dict(p.params)
            if p.metrics:  # a prior trial that was stopped early has rung values only
                self.final[key] = self._vec(p.metrics)
            at = p.rungs.get(first_rung) if first_rung is not None else None
            if at is not None and all(m in at for m in self.metrics):
                self.rung[key] = self._vec(at)
        self.has_prior = any(k.startswith("prior:") for k in self.final)
        self._fits: dict[tuple, list[Any]] = {}  # (which model, training ids) -> fitted GPs
        self._last: dict[str, list[Any]] = {}  # which model -> its latest fit
        self._tuned_at: dict[str, int] = {}  # which model -> rows when its hyperparameters were last optimised

    def _fitted(self, kind: str, rows: Sequence[str], x: np.ndarray, y: np.ndarray) -> list[Any]:
        key = (kind, tuple(rows))
        if key not in self._fits:
            # hyperparameters are re-optimised when the rows have grown by a quarter; in between the
            # posterior is only conditioned on the new rows (one Cholesky factorisation)
            optimise = kind not in self._tuned_at or len(rows) >= 1.25 * self._tuned_at[kind]
            self._fits[key] = self._last[kind] = _gp(x, y, seed=self.seed, start=self._last.get(kind),
                                                     optimise=optimise)
            if optimise:
                self._tuned_at[kind] = len(rows)
        return self._fits[key]

    def _vec(self, values: Mapping[str, Any]) -> np.ndarray:
        return np.asarray([float(values[m]) for m in self.metrics]) * self.signs

    def add(self, tid: str, params: Mapping[str, Any]) -> None:
        self.params[tid] = dict(params)

    def observe_rung(self, tid: str, values: Mapping[str, Any]) -> None:
        self.rung[tid] = self._vec(values)

    def observe_final(self, tid: str, values: Mapping[str, Any]) -> None:
        self.final[tid] = self._vec(values)

    def _names(self) -> list[str]:
        return sorted({k for p in self.params.values() for k in p})

    def _features(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        every = list(self.params)
        enc = _encode([self.params[i] for i in every], self._names())
        return {i: enc[k] for k, i in enumerate(every) if i in set(ids)}

    def _ref(self) -> list[float]:
        pts = np.asarray([*self.rung.values(), *self.final.values()])
        low, high = pts.min(0), pts.max(0)
        return [float(v) for v in high + REF_MARGIN * np.maximum(high - low, 1e-9)]

    def predict(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted final minimisation vectors of ``ids`` and their standard deviations: from the rung
        (rung value + a GP on the change to the end) when a candidate has one, else from the
        hyperparameters alone (GP on the finals, a warm start's prior included)."""
        ids = list(ids)
        feats = self._features(list(self.params))
        mean, std = np.zeros((len(ids), len(self.metrics))), np.zeros((len(ids), len(self.metrics)))
        probed = [k for k, i in enumerate(ids) if i in self.rung]
        blind = [k for k, i in enumerate(ids) if i not in self.rung]
        if probed:
            rows = [i for i in self.final if i in self.rung]
            x_of = {i: np.concatenate([feats[i], self.rung[i]]) for i in [*rows, *(ids[k] for k in probed)]}
            base = np.asarray([self.rung[ids[k]] for k in probed])
            mean[probed] = base
            if len(rows) >= MIN_FIT:
                models = self._fitted("rung", rows, np.asarray([x_of[i] for i in rows]),
                                      np.asarray([self.final[i] - self.rung[i] for i in rows]))
                m, s = _predict(models, np.asarray([x_of[ids[k]] for k in probed]))
                mean[probed], std[probed] = base + m, s
        if blind:
            rows = list(self.final)
            if len(rows) < MIN_FIT:
                raise ValueError(f"{len(blind)} candidates have no rung value and only {len(rows)} finished rows")
            models = self._fitted("params", rows, np.asarray([feats[i] for i in rows]),
                                  np.asarray([self.final[i] for i in rows]))
            mean[blind], std[blind] = _predict(models, np.asarray([feats[ids[k]] for k in blind]))
        return mean, std

    def expected_gains(self, candidates: Sequence[str], *, believed: Sequence[str] = ()) -> np.ndarray:
        """Monte Carlo expected hypervolume gain of each candidate over the front of this sweep's finished
        trials plus the predicted finals of ``believed`` (trials still running to the end)."""
        ids = list(candidates)
        mean, std = self.predict([*ids, *believed])
        front = np.asarray([v for k, v in self.final.items() if not k.startswith("prior:")] + list(mean[len(ids):]))
        front = front.reshape(-1, len(self.metrics))
        samples = self.samples if (std[:len(ids)] > 0).any() else 1
        rng = np.random.default_rng(self.seed + len(self.final))
        draws = mean[:len(ids), None, :] + std[:len(ids), None, :] * rng.standard_normal(
            (len(ids), samples, len(self.metrics)))
        return hv_gains(front, draws, self._ref()).mean(axis=1)

    def current_hv(self) -> float:
        own = [v for k, v in self.final.items() if not k.startswith("prior:")]
        return hypervolume(np.asarray(own), self._ref()) if own else 0.0

    def choose(self, candidates: Sequence[str], *, believed: Sequence[str] = ()) -> str | None:
        """The candidate with the largest expected gain (first in ``candidates`` on a tie), or None when
        ``min_gain`` > 0 and the largest is not above ``min_gain`` x the front's hypervolume (with 0,
        a candidate expected to add nothing still runs: every proposal runs in the end)."""
        if not candidates:
            return None
        gains = self.expected_gains(candidates, believed=believed)
        best = int(np.argmax(gains))
        floor = self.min_gain * max(self.current_hv(), 1e-12)
        return list(candidates)[best] if self.min_gain <= 0 or gains[best] > floor else None


try:  # Tune is optional for the model above
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
except ImportError:  # pragma: no cover - ray is a dependency of sweeps
    TrialScheduler = object  # type: ignore[assignment,misc]
    Trial = Any  # type: ignore[assignment,misc]


class MultiFidelityPareto(TrialScheduler):
    """The probe of ``search.probe`` as a Tune scheduler: every proposal is PAUSED at ``first_rung``; once
    all have reported there, ``choose_trial_to_run`` resumes them by expected gain (module docstring).
    With a prior, proposals are not paused: each runs to the end.

    Args (keyword-only):
        metrics / modes: the objectives and their ``min``/``max`` modes.
        first_rung: the step where probes pause (a step the trial reports at); read only with ``probe``.
        dims: the config keys that are hyperparameters (default: every key of a trial's config).
        prior: finished trials of an earlier sweep (warm start); see :class:`PriorTrial`.
        seed, min_gain, samples: as :class:`ParetoGainModel`.
        time_attr / total_attr: result keys holding the step and the run length.
        max_concurrent: trials running at once (``search.max_concurrent``); None = as many as Tune's
            resources allow. The search's variant generator hands Tune every proposal at once, so the
            limit is kept here.
    """

    def __init__(self, *, metrics: Sequence[str], modes: Sequence[str], first_rung: int,
                 dims: Sequence[str] | None = None, prior: Sequence[PriorTrial] = (), seed: int = 0,
                 min_gain: float = MIN_GAIN, samples: int = SAMPLES, time_attr: str = "step",
                 total_attr: str = "total_steps", max_concurrent: int | None = None):
        super().__init__()
        if first_rung <= 0:
            raise ValueError(f"first_rung={first_rung}: must be > 0")
        self.model = ParetoGainModel(metrics=metrics, modes=modes, prior=prior, first_rung=first_rung, seed=seed,
                                     min_gain=min_gain, samples=samples)
        self.metrics, self.first_rung, self.dims = list(metrics), int(first_rung), dims
        self.time_attr, self.total_attr = time_attr, total_attr
        self.max_concurrent = max_concurrent
        self.finishing: set[str] = set()  # trials chosen to run to the end
        self.stopped: set[str] = set()  # paused or pending trials this scheduler stopped
        self._metric = self.metrics[0]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _params(self, trial: Trial) -> dict[str, Any]:
        config = dict(getattr(trial, "config", {}) or {})
        return {k: v for k, v in config.items() if self.dims is None or k in self.dims}

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self.model.add(trial.trial_id, self._params(trial))

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        step, total = result.get(self.time_attr), result.get(self.total_attr)
        tid = trial.trial_id
        if step is not None and total is not None and int(step) >= int(total):
            self.model.observe_final(tid, result)
            return TrialScheduler.CONTINUE
        if step is not None and int(step) == self.first_rung and tid not in self.model.rung:
            self.model.observe_rung(tid, result)
            return TrialScheduler.CONTINUE if tid in self.finishing else TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        if result and result.get(self.time_attr) is not None and result.get(self.total_attr) is not None \
                and int(result[self.time_attr]) >= int(result[self.total_attr]):
            self.model.observe_final(trial.trial_id, result)
        self.finishing.discard(trial.trial_id)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.finishing.discard(trial.trial_id)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.finishing.discard(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        pending = [t for t in trials if t.status == Trial.PENDING and t.trial_id not in self.stopped]
        paused = [t for t in trials if t.status == Trial.PAUSED and t.trial_id not in self.stopped]
        running = [t for t in trials if t.status == Trial.RUNNING]
        if self.max_concurrent is not None and len(running) >= self.max_concurrent:
            return None
        if pending and not self.model.has_prior:
            return pending[0]  # probe: every proposal reaches the first rung before any is finished
        if any(t.trial_id not in self.finishing for t in running):
            return None  # a probe is still on its way to the rung: decide with the whole rung in view
        pool = paused + pending
        chosen = self.model.choose([t.trial_id for t in pool], believed=[t.trial_id for t in running])
        if chosen is not None:
            self.finishing.add(chosen)
            return next(t for t in pool if t.trial_id == chosen)
        if not running:  # nothing left can change the model: the rest will not be run
            for t in pool:
                self.stopped.add(t.trial_id)
                tune_controller.stop_trial(t)
        return None

    def debug_string(self) -> str:
        return (f"MultiFidelityPareto: {len(self.model.rung)} probed at step {self.first_rung}, "
                f"{len(self.model.final)} finished, {len(self.finishing)} finishing")


def build_mf_scheduler(spec: Any, state_path: str | None = None, *,
                       prior: Sequence[PriorTrial] = ()) -> MultiFidelityPareto:
    """The scheduler of ``search.algorithm: ehvi`` for a validated spec (``search.probe``: probes pause at
    ``fidelity.rungs[0]``, default the first text evaluation). Its decisions are not written to
    ``state_path``: a resumed driver re-derives them from the trials' reported results."""
    rungs = spec.fidelity.rungs
    first = int(rungs[0]) if rungs else int(spec.fidelity.text_every)
    return MultiFidelityPareto(metrics=spec.objective_metrics(), modes=spec.objective_modes(), first_rung=first,
                               dims=list(spec.dimensions()), prior=prior, seed=spec.search.seed or 0,
                               max_concurrent=spec.search.max_concurrent)
