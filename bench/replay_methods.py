"""The search methods of the replay bench, each driven through its library's own calls.

  grid          every configuration to the end in a seeded random order (sampling without
                replacement from a finite grid is this)
  pareto_sh     our ParetoSuccessiveHalving (sweeps/pareto_scheduler.py), through Tune's
                TrialScheduler calls; rungs = every evaluation but the last
  mo_asha       syne-tune's MOASHA (the real class) on the table's own rung ladder at every eta:
                it is told rung j as time eta**j (grace 1), so its geometric rungs are the recorded
                steps; ``mo_asha_ranked`` repairs its within-rung ranking (see rank_priority)
  tpe, nsga2    real Optuna samplers, ask/tell with the same workers, each trial to the end; TPE
                with a constant liar; start-up (TPE) and population (NSGA-II) = the worker count,
                so the model acts from the fifth trial; a proposal already run is told its
                recorded values and asked again (no configuration runs twice)
  ehvi          sweeps/ehvi_search.EhviSearcher (search.algorithm: ehvi), through Tune's Searcher
                calls (suggest, on_trial_result, on_trial_complete); the proposals are the grid
                in the seeded order; ``ehvi_warm`` with ``prior`` = the other table's trials (a
                warm start from another training seed)
  ehvi_known_kernel
                ``ehvi`` cold, its surrogate's kernel hyperparameters fitted beforehand on every
                configuration's finals in every table (``known_kernels``) and held fixed: what a GP
                search gets when the surrogate's shape is known in advance (not a method a sweep has)
  ehvi_probe    search.probe: sweeps/mf_search.MultiFidelityPareto through Tune's scheduler calls
                (every configuration added PENDING, choose_trial_to_run, CONTINUE/PAUSE/STOP,
                stop_trial): every configuration first to ``first_rung``, paused there
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from replay_loop import Method
from replay_table import CurveTable

from analysis import dominance
from sage_core.defs.metrics import direction


def _modes(table: CurveTable) -> list[str]:
    return ["min" if direction(m) == "minimize" else "max" for m in table.objectives]


class Grid(Method):
    def __init__(self, order: list[int]):
        self.order = iter(order)
        self.n = itertools.count()

    def next_trial(self) -> tuple[str, int] | None:
        config = next(self.order, None)
        return None if config is None else (f"t{next(self.n)}", config)


@dataclass
class _TuneTrial:
    """What a Tune scheduler reads of a trial: its id, config, status and last result."""

    trial_id: str
    status: str
    config: dict = field(default_factory=dict)
    last_result: dict = field(default_factory=dict)


class _Controller:
    """The part of Tune's controller that a TrialScheduler calls back into."""

    def __init__(self, scheduler: Any = None) -> None:
        self.trials: list[_TuneTrial] = []
        self.scheduler = scheduler

    def get_trials(self) -> list[_TuneTrial]:
        return self.trials

    def stop_trial(self, trial: _TuneTrial) -> None:
        """As TuneController.stop_trial for a PENDING or PAUSED trial: on_trial_remove, then TERMINATED."""
        self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"


def _tune_result(result: dict[str, float], *, step: int, total: int) -> dict[str, Any]:
    from sweeps.trial import reported_metrics

    return reported_metrics(result, step=step, total_steps=total, epoch=0, wall_s=float(step), device_share=1.0)


class TuneScheduled(Method):
    """Trials from ``inner`` (their order), stopped by a Tune TrialScheduler as Tune would call it."""

    def __init__(self, inner: Method, scheduler: Any, *, total: int, eval_steps: tuple[int, ...]):
        from ray.tune.experiment import Trial

        self.inner, self.scheduler, self.total, self.status = inner, scheduler, total, Trial
        self.eval_steps = eval_steps
        self.ctl = _Controller(scheduler)
        self.by_id: dict[str, _TuneTrial] = {}

    def next_trial(self) -> tuple[str, int] | None:
        nxt = self.inner.next_trial()
        if nxt is None:
            return None
        trial = _TuneTrial(trial_id=nxt[0], status=self.status.PENDING)
        self.ctl.trials.append(trial)
        self.by_id[trial.trial_id] = trial
        self.scheduler.on_trial_add(self.ctl, trial)
        chosen = self.scheduler.choose_trial_to_run(self.ctl)
        if chosen is not trial:  # one trial is pending at a time: the scheduler must pick it
            raise RuntimeError(f"{type(self.scheduler).__name__}.choose_trial_to_run picked {chosen}, not {trial}")
        chosen.status = self.status.RUNNING
        return nxt

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool | str:
        tt = self.by_id[trial]
        tt.last_result = _tune_result(result, step=step, total=self.total)
        keep = self.scheduler.on_trial_result(self.ctl, tt, tt.last_result) == "CONTINUE"
        return bool(self.inner.report(trial, config, step, result)) and keep

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        tt = self.by_id[trial]
        self.scheduler.on_trial_complete(self.ctl, tt, tt.last_result)
        tt.status = self.status.TERMINATED
        self.inner.finish(trial, config, tt.last_result, completed=completed)


class TunePool(Method):
    """Every configuration added PENDING up front (Tune's variant generator over the grid), in ``order``;
    the scheduler picks what runs (``choose_trial_to_run``: a PENDING trial starts, a PAUSED one resumes)
    and answers each result CONTINUE, PAUSE or STOP."""

    def __init__(self, table: CurveTable, order: list[int], scheduler: Any, *, eval_steps: tuple[int, ...]):
        self.table, self.scheduler, self.eval_steps = table, scheduler, eval_steps
        self.ctl = _Controller(scheduler)
        self.by_id: dict[str, tuple[_TuneTrial, int]] = {}
        for i, config in enumerate(order):
            trial = _TuneTrial(trial_id=f"t{i}", status="PENDING", config=dict(table.params[config]))
            self.ctl.trials.append(trial)
            self.by_id[trial.trial_id] = (trial, config)
            scheduler.on_trial_add(self.ctl, trial)

    def next_trial(self) -> tuple[str, int] | None:
        chosen = self.scheduler.choose_trial_to_run(self.ctl)
        if chosen is None:
            return None
        if chosen.status not in ("PENDING", "PAUSED"):
            raise RuntimeError(f"choose_trial_to_run picked {chosen.trial_id} in status {chosen.status}")
        chosen.status = "RUNNING"
        return chosen.trial_id, self.by_id[chosen.trial_id][1]

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool | str:
        tt = self.by_id[trial][0]
        tt.last_result = _tune_result(result, step=step, total=self.table.total)
        decision = self.scheduler.on_trial_result(self.ctl, tt, tt.last_result)
        if decision == "PAUSE":
            tt.status = "PAUSED"
            return "pause"
        return decision == "CONTINUE"

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        tt = self.by_id[trial][0]
        self.scheduler.on_trial_complete(self.ctl, tt, tt.last_result)
        tt.status = "TERMINATED"


class TuneSearched(Method):
    """A Tune ``Searcher`` driven as Tune's SearchGenerator drives it: ``suggest(trial_id)`` for each free
    worker (None: nothing now; ``Searcher.FINISHED``: no more), ``on_trial_result`` for each report,
    ``on_trial_complete`` with the last result; every trial to the end."""

    def __init__(self, table: CurveTable, searcher: Any):
        self.table, self.searcher, self.n = table, searcher, itertools.count()
        self.finished = False

    def next_trial(self) -> tuple[str, int] | None:
        if self.finished:
            return None
        tid = f"s{next(self.n)}"
        config = self.searcher.suggest(tid)
        if config is None or config == "FINISHED":
            self.finished = config == "FINISHED"
            return None
        return tid, self.table.config_of(config)

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool | str:
        self.last = _tune_result(result, step=step, total=self.table.total)
        self.searcher.on_trial_result(trial, self.last)
        return True

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        self.searcher.on_trial_complete(trial, self.last)


class SyneTuneScheduled(Method):
    """Trials in ``order``, stopped by syne-tune's MOASHA as syne-tune's Tuner calls it: every result
    -> on_trial_result; STOP -> on_trial_remove; a trial that ends without a STOP -> on_trial_complete.
    Rung j of the table is told as time ``eta**j`` with grace period 1 and ``max_t = eta**(len - 1)``,
    so MOASHA's rungs (grace x eta^k) are exactly the recorded evaluation steps at every eta."""

    def __init__(self, table: CurveTable, order: list[int], *, eta: int, seed: int, ranked: bool = False):
        from syne_tune.backend.trial_status import Trial
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        np.random.seed(seed)  # MOASHA draws each trial's bracket from numpy's global generator
        self.table, self.grid, self.trial_cls, self.eta = table, Grid(order), Trial, eta
        self.eval_steps = table.steps
        self.signs = dominance.objective_signs(list(table.objectives))
        self.names = [f"{m}_minimised" for m in table.objectives]  # MOASHA minimises every metric
        self.sched = MOASHA(config_space={}, metrics=self.names, do_minimize=True, time_attr="rung_time",
                            max_t=eta ** (len(table.steps) - 1), grace_period=1, reduction_factor=eta,
                            random_seed=seed, multiobjective_priority=rank_priority() if ranked else None)
        self.trials: dict[str, Any] = {}
        self.stopped: set[str] = set()

    def next_trial(self) -> tuple[str, int] | None:
        nxt = self.grid.next_trial()
        if nxt is not None:
            trial = self.trial_cls(trial_id=len(self.trials), config=self.table.params[nxt[1]],
                                   creation_time=datetime.datetime(2026, 1, 1))
            self.trials[nxt[0]] = trial
            self.sched.on_trial_add(trial)
        return nxt

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool | str:
        self.last = {"rung_time": self.eta ** self.table.steps.index(step),
                     **{n: s * result[m] for n, s, m in zip(self.names, self.signs, self.table.objectives,
                                                                          strict=True)}}
        if self.sched.on_trial_result(self.trials[trial], self.last) == "CONTINUE":
            return True
        self.sched.on_trial_remove(self.trials[trial])
        self.stopped.add(trial)
        return False

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        if trial not in self.stopped:
            self.sched.on_trial_complete(self.trials[trial], self.last)


def rank_priority() -> Any:
    """syne-tune's NonDominatedPriority returns the items' sort ORDER (``nondominated_sort``: indices,
    best first), but its ASHA ``Bracket`` reads the array as one priority per item, so a new trial is
    judged by the index of whichever trial sorts last (syne-tune 0.16.0). This variant returns each
    item's position in that order instead: the ranking the MO-ASHA paper describes."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    class RankPriority(NonDominatedPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            order = super().priority_unsafe(objectives)
            ranks = np.empty(len(order), dtype=float)
            ranks[order] = np.arange(len(order))
            return ranks

    return RankPriority()


class OptunaAsk(Method):
    """Real Optuna ask/tell on the table: categorical distributions over the grid's values. A proposal
    that was already run is told its recorded final values (a real sweep reads them from its store)
    and the sampler is asked again; after ``retries`` such proposals the next configuration of the
    seeded ``order`` not yet run is enqueued, so no configuration runs twice."""

    def __init__(self, table: CurveTable, sampler: Any, order: list[int], *, retries: int = 20):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.table, self.order, self.retries = optuna, table, order, retries
        self.study = optuna.create_study(directions=[direction(m) for m in table.objectives], sampler=sampler)
        names = list(table.params[0])
        self.dists = {n: optuna.distributions.CategoricalDistribution(sorted({p[n] for p in table.params}))
                      for n in names}
        self.asked: dict[str, Any] = {}
        self.used: set[int] = set()
        self.done: dict[int, list[float]] = {}

    def next_trial(self) -> tuple[str, int] | None:
        if len(self.used) == len(self.table.params):
            return None
        for _ in range(self.retries):
            trial = self.study.ask(self.dists)
            config = self.table.config_of(trial.params)
            if config not in self.used:
                break
            if config in self.done:
                self.study.tell(trial, self.done[config])
            else:  # running or pruned: nothing to tell yet
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            config = next(c for c in self.order if c not in self.used)
            self.study.enqueue_trial(dict(self.table.params[config]))
            trial = self.study.ask(self.dists)
        self.used.add(config)
        tid = f"o{trial.number}"
        self.asked[tid] = trial
        return tid, config

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        t = self.asked.pop(trial)
        if completed:
            self.done[config] = [result[m] for m in self.table.objectives]
            self.study.tell(t, self.done[config])
        else:
            self.study.tell(t, state=self.optuna.trial.TrialState.PRUNED)


def optuna_sampler(kind: str, *, seed: int, workers: int) -> Any:
    """TPE with a constant liar and ``workers`` start-up trials; NSGA-II with a population of ``workers``."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=workers, constant_liar=True)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, workers))


@dataclass(frozen=True)
class TablePrior:
    """One configuration of another recording as a warm start's prior trial (sweeps.mf_search.PriorTrial)."""

    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    rungs: Mapping[int, Mapping[str, float]]


def table_prior(table: CurveTable) -> list[TablePrior]:
    return [TablePrior(params=dict(p), metrics=table.result(c, table.total),
                       rungs={s: table.result(c, s) for s in table.steps[:-1]}) for c, p in enumerate(table.params)]


def known_kernels(tables: list[CurveTable]) -> list[Any]:
    """The kernels (scikit-learn, one per objective) that ``ehvi``'s surrogate fits on every configuration's
    finals of every table (one row per configuration and table, the model's own feature encoding and
    signs)."""
    from sweeps.mf_search import _encode, _gp

    x = _encode(tables[0].params, sorted(tables[0].params[0]))
    signs = dominance.objective_signs(list(tables[0].objectives))
    fits = _gp(np.vstack([x] * len(tables)), np.vstack([t.values[:, -1, :] * signs for t in tables]), seed=0)
    return [m.kernel_ for m in fits]


def _fixed_kernel_fits(kernels: list[Any]) -> Callable[..., list[Any]]:
    """A ``ParetoGainModel._fitted`` that conditions GPs with ``kernels`` held fixed (no optimiser)."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    def fitted(kind: str, rows: Any, x: np.ndarray, y: np.ndarray) -> list[Any]:
        return [GaussianProcessRegressor(kernels[k], normalize_y=True, optimizer=None).fit(x, col)
                for k, col in enumerate(y.T)]

    return fitted


def methods(table: CurveTable, *, workers: int, etas: tuple[int, ...] = (2, 3), first_rung: int | None = None,
            prior: list[TablePrior] | None = None,
            known: list[CurveTable] | None = None) -> dict[str, Callable[[int], Method]]:
    """Name -> factory(seed). The seed picks the arrival order (or the sampler's seed); ``known``: the
    tables whose finals fix ``ehvi_known_kernel``'s kernels (default: this one)."""
    from sweeps.ehvi_search import EhviSearcher
    from sweeps.mf_search import MultiFidelityPareto
    from sweeps.pareto_scheduler import ParetoSuccessiveHalving

    n, rungs = len(table.params), tuple(table.steps[:-1])
    first = first_rung or table.steps[0]

    def order(seed: int) -> list[int]:
        return [int(i) for i in np.random.default_rng(seed).permutation(n)]

    def ours(seed: int, eta: int) -> Method:
        sched = ParetoSuccessiveHalving(metrics=list(table.objectives), modes=_modes(table), rungs=list(rungs), eta=eta)
        return TuneScheduled(Grid(order(seed)), sched, total=table.total, eval_steps=rungs)

    def ehvi(seed: int, warm: list[TablePrior] | None, kernels: list[Any] | None = None) -> Method:
        searcher = EhviSearcher(candidates=[table.params[c] for c in order(seed)], metrics=list(table.objectives),
                                modes=_modes(table), prior=warm or (), seed=seed)
        if kernels is not None:  # this searcher's model only
            searcher.model._fitted = _fixed_kernel_fits(kernels)  # type: ignore[method-assign]
        return TuneSearched(table, searcher)

    def probe(seed: int) -> Method:
        sched = MultiFidelityPareto(metrics=list(table.objectives), modes=_modes(table), first_rung=first, seed=seed)
        return TunePool(table, order(seed), sched, eval_steps=(first,))

    out: dict[str, Callable[[int], Method]] = {"grid": lambda s: Grid(order(s))}
    for eta in etas:
        out[f"pareto_sh(eta={eta})"] = lambda s, eta=eta: ours(s, eta)
        out[f"mo_asha(eta={eta})"] = lambda s, eta=eta: SyneTuneScheduled(table, order(s), eta=eta, seed=s)
        out[f"mo_asha_ranked(eta={eta})"] = lambda s, eta=eta: SyneTuneScheduled(table, order(s), eta=eta, seed=s,
                                                                                  ranked=True)
    for kind in ("tpe", "nsga2"):
        out[kind] = lambda s, kind=kind: OptunaAsk(table, optuna_sampler(kind, seed=s, workers=workers), order(s))
    out["ehvi"] = lambda s: ehvi(s, None)
    kernels: list[Any] = []  # fitted once, when the arm first runs

    def known_kernel(seed: int) -> Method:
        kernels[:] = kernels or known_kernels(known or [table])
        return ehvi(seed, None, kernels)

    out["ehvi_known_kernel"] = known_kernel
    out["ehvi_probe"] = probe
    if prior:
        out["ehvi_warm"] = lambda s: ehvi(s, prior)
    return out
