"""Tabular search benchmark: replay recorded SAGE learning curves through each search method.

The table (``bench/record_curves.py``) holds, for every configuration of a grid, the text objectives
at each evaluation step up to the run length T. A small event loop replays it the way Ray Tune runs
a sweep: ``--workers`` trials at a time, each advancing one training step per time unit and
reporting at the recorded steps; a scheduler may stop a trial at a report, and a freed worker starts
the next trial. Compute is counted in trial-steps (training steps actually taken; the full grid
spends n_configs x T). Every method runs over ``--orders`` seeded arrival orders (or sampler seeds):

  grid            every configuration to the end, in the seeded order
  random          configurations drawn uniformly with replacement, each to the end
  pareto_sh       our ParetoSuccessiveHalving (sweeps/pareto_scheduler.py), driven through Tune's
                  TrialScheduler calls (on_trial_add, choose_trial_to_run, on_trial_result ->
                  CONTINUE/STOP, on_trial_complete with the last result), rungs = every
                  evaluation but the last (or --rungs), over the grid in the seeded order
  mo_asha         syne-tune's MOASHA (the real class), grace period = the first rung,
                  reduction factor eta, same order and reports, called as syne-tune's Tuner calls it
  mo_asha_ranked  the same with its within-rung ranking repaired (see _rank_priority)
  nsga2, tpe      real Optuna samplers (ask/tell, asynchronous with the same workers), each trial
                  to the end; sampler sizes as sweeps/search.py sets them for num_samples = n_configs
  nsga2+psh, tpe+psh  the same samplers with our scheduler stopping trials at the rungs; a stopped
                  trial is told as PRUNED (as sweeps/search.py does)

Score: hypervolume of the final points of the trials that reached T, at each compute budget, as a
fraction of the full grid's hypervolume (analysis.pareto.hypervolume; objectives and directions
from the metric registry; reference point = the grid's nadir pushed out by 10% of its range, so
the extreme points of the front count). Medians and 10-90% ranges over the orders, and a plot.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search_replay.py [--table PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from analysis import dominance
from analysis.metrics import direction, is_metric
from analysis.pareto import hypervolume

ROOT = Path(__file__).resolve().parents[1]
HAVE_SYNE_TUNE = importlib.util.find_spec("syne_tune") is not None  # pip install -e ".[bench]"
DEFAULT_TABLE = ROOT / "bench" / "data" / "sage_minilm_curves.parquet"
OBJECTIVES = ("concept_auc", "util_sib")
BUDGETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
REF_MARGIN = 0.1


# -- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveTable:
    """``values[c, j, k]``: objective k of configuration c at evaluation ``steps[j]``; ``bounds[c, j, k]``
    (optional): its bootstrap interval ``(lo, hi)``, reported as ``<objective>_lo``/``_hi``."""

    params: list[dict[str, Any]]
    steps: tuple[int, ...]
    values: np.ndarray
    objectives: tuple[str, ...] = OBJECTIVES
    bounds: np.ndarray | None = None

    @property
    def total(self) -> int:
        return self.steps[-1]

    def config_of(self, params: dict[str, Any]) -> int:
        return self.params.index({k: params[k] for k in self.params[0]})

    def result(self, config: int, step: int) -> dict[str, float]:
        j = self.steps.index(step)
        out = {m: float(self.values[config, j, k]) for k, m in enumerate(self.objectives)}
        if self.bounds is not None:
            for k, m in enumerate(self.objectives):
                out[f"{m}_lo"], out[f"{m}_hi"] = (float(v) for v in self.bounds[config, j, k])
        return out


def load_table(path: Path, *, objectives: tuple[str, ...] = OBJECTIVES) -> CurveTable:
    """Read a recording; one line naming the file and what is missing when it is not one."""
    import pyarrow.parquet as pq

    from sage_core.errors import DataError

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"--table={path}: not a readable Parquet file ({exc}); record one with "
                        "bench/record_curves.py") from None
    meta = json.loads((table.schema.metadata or {}).get(b"sage_record", b"{}") or b"{}")
    names = list(meta.get("settings", {}).get("grid", {}))
    need = ["config_id", "step", *names, *objectives]
    missing = [c for c in need if c not in table.column_names] or ([] if names else ["grid settings metadata"])
    if missing:
        raise DataError(f"--table={path}: lacks {missing}; expected a table written by bench/record_curves.py")
    ends = [f"{m}_{e}" for m in objectives for e in ("lo", "hi")]
    has_bounds = all(c in table.column_names for c in ends)
    rows = table.select(need + (ends if has_bounds else [])).to_pylist()
    ids = sorted({r["config_id"] for r in rows})
    steps = tuple(sorted({r["step"] for r in rows}))
    cell = {(r["config_id"], r["step"]): r for r in rows}
    gaps = [(c, s) for c in ids for s in steps if (c, s) not in cell]
    if gaps:
        raise DataError(f"--table={path}: {len(gaps)} (config, step) cells missing, e.g. {gaps[:3]}; "
                        "finish the recording (rerun bench/record_curves.py with the same arguments)")
    values = np.asarray([[[cell[c, s][m] for m in objectives] for s in steps] for c in ids], dtype=float)
    params = [{n: cell[c, steps[0]][n] for n in names} for c in ids]
    bounds = (np.asarray([[[[cell[c, s][f"{m}_lo"], cell[c, s][f"{m}_hi"]] for m in objectives] for s in steps]
                          for c in ids], dtype=float) if has_bounds else None)
    full = int(np.prod([len(meta["settings"]["grid"][n]) for n in names]))
    if len(params) != full:  # the samplers propose any grid point, so every one must be recorded
        raise DataError(f"--table={path}: {len(params)} of the grid's {full} configurations are recorded; "
                        "finish the recording (rerun bench/record_curves.py with the same arguments)")
    return CurveTable(params=params, steps=steps, values=values, objectives=objectives, bounds=bounds)


# -- scoring --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scorer:
    """Hypervolume of a set of configurations' final points, as a fraction of the full grid's."""

    table: CurveTable
    ref: np.ndarray = field(init=False)
    grid_hv: float = field(init=False)

    def __post_init__(self) -> None:
        finals = self.table.values[:, -1, :]
        signs = dominance.objective_signs(list(self.table.objectives))
        low, high = (finals * signs).min(0), (finals * signs).max(0)
        object.__setattr__(self, "ref", (high + REF_MARGIN * (high - low)) * signs)
        object.__setattr__(self, "grid_hv", self.hv(range(len(finals))))

    def hv(self, configs) -> float:
        pts = self.table.values[sorted(set(configs)), -1, :]
        x, y = self.table.objectives
        return hypervolume(pts, x=x, y=y, ref=list(self.ref)) if len(pts) else 0.0

    def fraction(self, configs) -> float:
        return self.hv(configs) / self.grid_hv


# -- lower bounds -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LowerBounds:
    """The least compute (fraction of the grid's trial-steps) any method needs to reach ``target``
    of the grid's hypervolume, knowing the table in advance (an oracle)."""

    target: float
    best_by_count: tuple[float, ...]  # [k-1]: the best HV fraction of any k configurations run to T
    runs: int  # the fewest configurations run to T whose final front reaches ``target``
    exact: bool  # True: by enumeration; False: greedy (then ``runs`` is an upper bound on the fewest)
    skip_all: float  # compute when configurations may be skipped entirely: runs x T
    first_rung: float  # compute when every configuration runs to the first evaluation: n x s1 + runs x (T - s1)


def lower_bounds(table: CurveTable, *, target: float = 0.95, max_enumerated: int = 16) -> LowerBounds:
    """Every configuration costs the same to finish, so the cheapest subset reaching ``target`` is a
    smallest one. A smallest one can be taken among the grid's non-dominated final points: swapping a
    dominated configuration for one that dominates it (or dropping it when that one is already in)
    never lowers the hypervolume. Exact by enumerating the front's subsets by size when the front has
    at most ``max_enumerated`` points; greedy (largest gain first) beyond."""
    scorer = Scorer(table)
    finals = dominance.minimised(table.values[:, -1, :], dominance.objective_signs(list(table.objectives)))
    front = [int(i) for i in np.flatnonzero(dominance.front_mask(finals))]
    best: list[float] = []
    exact = len(front) <= max_enumerated
    chosen: list[int] = []
    for k in range(1, len(front) + 1):
        if exact:
            best.append(max(scorer.fraction(sub) for sub in itertools.combinations(front, k)))
        else:
            chosen.append(max((c for c in front if c not in chosen), key=lambda c: scorer.fraction([*chosen, c])))
            best.append(scorer.fraction(chosen))
    runs = next(k for k, f in enumerate(best, 1) if f >= target - 1e-12)
    n, total, first = len(table.params), table.total, table.steps[0]
    return LowerBounds(target=target, best_by_count=tuple(best), runs=runs, exact=exact,
                       skip_all=runs * total / (n * total),
                       first_rung=(n * first + runs * (total - first)) / (n * total))


def synchronous_halving(table: CurveTable, *, rungs: tuple[int, ...], eta: int) -> tuple[list[int], float]:
    """Successive halving with every decision taken on full information: all surviving configurations
    report at a rung before the top ``ceil(n / eta)`` in NSGA-II order (front, then crowding) go on.
    What an asynchronous scheduler (ours, MO-ASHA) approaches when trials may wait to be promoted;
    returns the configurations that finish and the compute fraction spent."""
    signs = dominance.objective_signs(list(table.objectives))
    alive, spent, prev = list(range(len(table.params))), 0, 0
    for r in rungs:
        spent += len(alive) * (r - prev)
        prev = r
        ranks, crowd = dominance.ranks_and_crowding(dominance.minimised(table.values[alive, table.steps.index(r)],
                                                                        signs))
        order = sorted(range(len(alive)), key=lambda i: (ranks[i], -crowd[i], alive[i]))
        alive = [alive[i] for i in order[:math.ceil(len(alive) / eta)]]
    spent += len(alive) * (table.total - prev)
    return alive, spent / (len(table.params) * table.total)


# -- the event loop -------------------------------------------------------------------------
@dataclass
class Trace:
    """What a method achieved: (compute spent, configuration) at each trial that reached T."""

    completions: list[tuple[float, int]] = field(default_factory=list)
    compute: float = 0.0  # trial-steps spent when the method stopped (or hit the budget cap)

    def fractions(self, scorer: Scorer, budgets: tuple[float, ...], grid_steps: float) -> list[float]:
        out = []
        for b in budgets:
            done = [c for spent, c in self.completions if spent <= b * grid_steps + 1e-9]
            out.append(scorer.fraction(done) if done else 0.0)
        return out


class Method:
    """One search method in the replay: which configuration next, and what to do with a report."""

    def next_trial(self) -> tuple[str, int] | None:  # (trial id, config) or None: no more trials
        raise NotImplementedError

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool:
        return True  # continue?

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        pass


def replay(table: CurveTable, method: Method, *, workers: int, cap: float) -> Trace:
    """Run ``method`` on ``workers`` until it has no trial left or has spent ``cap`` trial-steps."""
    events: list[tuple[int, int, str]] = []  # (time, start sequence, trial id)
    running: dict[str, tuple[int, int, int]] = {}  # trial -> (config, start time, sequence)
    trace, now, seq = Trace(), 0, itertools.count()
    exhausted = False

    def launch() -> None:
        nonlocal exhausted
        while not exhausted and len(running) < workers and trace.compute < cap:
            nxt = method.next_trial()
            if nxt is None:
                exhausted = True
                return
            trial, config = nxt
            running[trial] = (config, now, next(seq))
            heapq.heappush(events, (now + table.steps[0], running[trial][2], trial))

    launch()
    while events:
        t, _, trial = heapq.heappop(events)
        trace.compute += len(running) * (t - now)
        now = t
        config, start, order = running[trial]
        step = t - start
        result = table.result(config, step)
        final = step == table.total
        if method.report(trial, config, step, result) and not final:
            heapq.heappush(events, (start + table.steps[table.steps.index(step) + 1], order, trial))
            continue
        del running[trial]
        method.finish(trial, config, result, completed=final)
        if final:
            trace.completions.append((trace.compute, config))
        launch()
    return trace


# -- methods --------------------------------------------------------------------------------
class Grid(Method):
    def __init__(self, order: list[int]):
        self.order = iter(order)
        self.n = itertools.count()

    def next_trial(self) -> tuple[str, int] | None:
        config = next(self.order, None)
        return None if config is None else (f"t{next(self.n)}", config)


class Random(Grid):
    def __init__(self, n_configs: int, seed: int):
        rng = np.random.default_rng(seed)
        super().__init__(iter(lambda: int(rng.integers(n_configs)), None))


@dataclass
class _TuneTrial:
    """What a Tune scheduler reads of a trial: its id, status and last result."""

    trial_id: str
    status: str
    last_result: dict = field(default_factory=dict)


class _Controller:
    """The part of Tune's controller that a TrialScheduler calls back into."""

    def __init__(self) -> None:
        self.trials: list[_TuneTrial] = []

    def get_trials(self) -> list[_TuneTrial]:
        return self.trials


class TuneScheduled(Method):
    """Trials from ``inner`` (their order), stopped by a Ray Tune TrialScheduler as Tune would call it."""

    def __init__(self, inner: Method, scheduler: Any, *, total: int):
        from ray.tune.experiment import Trial

        self.inner, self.scheduler, self.total, self.status = inner, scheduler, total, Trial
        self.ctl = _Controller()
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

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool:
        from sweeps.trial import reported_metrics

        tt = self.by_id[trial]
        tt.last_result = reported_metrics(result, step=step, total_steps=self.total, epoch=0, wall_s=float(step),
                                          device_share=1.0)
        decision = self.scheduler.on_trial_result(self.ctl, tt, tt.last_result)
        keep = decision == "CONTINUE"
        return self.inner.report(trial, config, step, result) and keep

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        tt = self.by_id[trial]
        self.scheduler.on_trial_complete(self.ctl, tt, tt.last_result)
        tt.status = self.status.TERMINATED
        self.inner.finish(trial, config, tt.last_result, completed=completed)


class SyneTuneScheduled(Method):
    """Trials in ``order``, stopped by syne-tune's MOASHA as syne-tune's Tuner calls it: every result
    -> on_trial_result; STOP -> on_trial_remove; a trial that ends without a STOP -> on_trial_complete."""

    def __init__(self, table: CurveTable, order: list[int], *, eta: int, seed: int, ranked: bool = False,
                 grace: int | None = None):
        from syne_tune.backend.trial_status import Trial
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        np.random.seed(seed)  # MOASHA draws each trial's bracket from numpy's global generator
        self.table, self.grid, self.trial_cls = table, Grid(order), Trial
        self.signs = dominance.objective_signs(list(table.objectives))
        self.names = [f"{m}_minimised" for m in table.objectives]  # MOASHA minimises every metric
        self.sched = MOASHA(config_space={}, metrics=self.names, do_minimize=True, time_attr="step",
                            max_t=table.total, grace_period=grace or table.steps[0], reduction_factor=eta, random_seed=seed,
                            multiobjective_priority=_rank_priority() if ranked else None)
        self.trials: dict[str, Any] = {}
        self.stopped: set[str] = set()

    def next_trial(self) -> tuple[str, int] | None:
        import datetime

        nxt = self.grid.next_trial()
        if nxt is not None:
            trial = self.trial_cls(trial_id=len(self.trials), config=self.table.params[nxt[1]],
                                   creation_time=datetime.datetime(2026, 1, 1))
            self.trials[nxt[0]] = trial
            self.sched.on_trial_add(trial)
        return nxt

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool:
        self.last = {"step": step, **{n: s * result[m] for n, s, m in zip(self.names, self.signs,
                                                                          self.table.objectives)}}
        if self.sched.on_trial_result(self.trials[trial], self.last) == "CONTINUE":
            return True
        self.sched.on_trial_remove(self.trials[trial])
        self.stopped.add(trial)
        return False

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        if trial not in self.stopped:
            self.sched.on_trial_complete(self.trials[trial], self.last)


def _rank_priority() -> Any:
    """syne-tune's NonDominatedPriority returns the items' sort ORDER (``nondominated_sort``: indices,
    best first), but its ASHA ``Bracket`` reads the array as one priority per item, so a new trial is
    judged by the index of whichever trial sorts last (measured in syne-tune 0.16.0: after a first
    trial that is the worst, every later trial continues). This variant returns each item's position
    in that order instead: the ranking the MO-ASHA paper describes."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    class RankPriority(NonDominatedPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            order = super().priority_unsafe(objectives)
            ranks = np.empty(len(order), dtype=float)
            ranks[order] = np.arange(len(order))
            return ranks

    return RankPriority()


class OptunaAsk(Method):
    """Real Optuna ask/tell on the table: categorical distributions over the grid's values."""

    def __init__(self, table: CurveTable, sampler: Any):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.table = optuna, table
        self.study = optuna.create_study(directions=[direction(m) for m in table.objectives], sampler=sampler)
        names = list(table.params[0])
        self.dists = {n: optuna.distributions.CategoricalDistribution(sorted({p[n] for p in table.params}))
                      for n in names}
        self.asked: dict[str, Any] = {}

    def next_trial(self) -> tuple[str, int] | None:
        trial = self.study.ask(self.dists)
        tid = f"o{trial.number}"
        self.asked[tid] = trial
        return tid, self.table.config_of(trial.params)

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        t = self.asked.pop(trial)
        if completed:
            self.study.tell(t, [result[m] for m in self.table.objectives])
        else:
            self.study.tell(t, state=self.optuna.trial.TrialState.PRUNED)


def optuna_sampler(kind: str, *, seed: int, n: int) -> Any:
    """The sampler sweeps/search.py builds for ``num_samples = n``."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n // 3)))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, min(50, n // 2)))


def our_scheduler(table: CurveTable, *, eta: int, noise_aware: bool = False,
                  rungs: tuple[int, ...] | None = None) -> Any:
    from sweeps.pareto_scheduler import ParetoSuccessiveHalving

    return ParetoSuccessiveHalving(metrics=list(table.objectives),
                                   modes=["min" if direction(m) == "minimize" else "max" for m in table.objectives],
                                   rungs=list(rungs or table.steps[:-1]), eta=eta, noise_aware=noise_aware)


def methods(table: CurveTable, *, etas: tuple[int, ...] = (2, 3),
            rungs: tuple[int, ...] | None = None) -> dict[str, Callable[[int], Method]]:
    """Name -> factory(seed). The seed picks the arrival order (or the sampler's seed). Our scheduler
    and MO-ASHA run at every ``eta``; the samplers with our pruning at the first. ``rungs``: the
    steps where our scheduler decides (default: every evaluation but the last); MO-ASHA's grace
    period is the first of them."""
    n = len(table.params)
    grace = rungs[0] if rungs else None

    def order(seed: int) -> list[int]:
        return [int(i) for i in np.random.default_rng(seed).permutation(n)]

    def pruned(inner: Method, eta: int, noise_aware: bool = False) -> Method:
        return TuneScheduled(inner, our_scheduler(table, eta=eta, noise_aware=noise_aware, rungs=rungs),
                             total=table.total)

    def sampler(kind: str, seed: int) -> Method:
        return OptunaAsk(table, optuna_sampler(kind, seed=seed, n=n))

    out: dict[str, Callable[[int], Method]] = {"grid": lambda s: Grid(order(s)), "random": lambda s: Random(n, s)}
    for eta in etas:
        out[f"pareto_sh(eta={eta})"] = lambda s, eta=eta: pruned(Grid(order(s)), eta)
        out[f"pareto_sh_noise(eta={eta})"] = lambda s, eta=eta: pruned(Grid(order(s)), eta, True)
        if not HAVE_SYNE_TUNE:
            continue
        out[f"mo_asha(eta={eta})"] = lambda s, eta=eta: SyneTuneScheduled(table, order(s), eta=eta, seed=s, grace=grace)
        out[f"mo_asha_ranked(eta={eta})"] = lambda s, eta=eta: SyneTuneScheduled(table, order(s), eta=eta, seed=s,
                                                                                  ranked=True, grace=grace)
    for kind in ("nsga2", "tpe"):
        out[kind] = lambda s, kind=kind: sampler(kind, s)
        out[f"{kind}+pareto_sh(eta={etas[0]})"] = lambda s, kind=kind: pruned(sampler(kind, s), etas[0])
    return out


@dataclass(frozen=True)
class MethodResult:
    name: str
    fractions: np.ndarray  # [orders, budgets]: HV fraction at each compute budget
    spent: np.ndarray  # [orders]: compute fraction the method used (1 = capped at the grid's)


def run_all(table: CurveTable, *, orders: int, workers: int, etas: tuple[int, ...] = (2, 3),
            budgets: tuple[float, ...] = BUDGETS, only: list[str] | None = None,
            rungs: tuple[int, ...] | None = None) -> Iterator[MethodResult]:
    """Every method (or those named in ``only``) over seeds ``0 .. orders-1``."""
    scorer = Scorer(table)
    grid_steps = float(len(table.params) * table.total)
    for name, make in methods(table, etas=etas, rungs=rungs).items():
        if only and name not in only:
            continue
        traces = [replay(table, make(seed), workers=workers, cap=grid_steps) for seed in range(orders)]
        yield MethodResult(name=name,
                           fractions=np.asarray([t.fractions(scorer, budgets, grid_steps) for t in traces]),
                           spent=np.asarray([min(t.compute, grid_steps) / grid_steps for t in traces]))


# -- report ---------------------------------------------------------------------------------
def summary(r: MethodResult, budgets: tuple[float, ...], shown: tuple[float, ...]) -> str:
    cells = []
    for b in shown:
        col = r.fractions[:, budgets.index(b)]
        cells.append(f"{np.median(col):.3f} [{np.percentile(col, 10):.2f},{np.percentile(col, 90):.2f}]")
    return f"{r.name:<24}" + "".join(f"{c:>20}" for c in cells) + f"{np.median(r.spent):>10.3f}"


def plot(results: list[MethodResult], budgets: tuple[float, ...], path: Path, *, title: str,
         bounds: LowerBounds | None = None) -> None:
    """Median HV fraction against compute, 10-90% band; schedulers left, samplers right; the oracle
    lower bounds (:func:`lower_bounds`) as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, keep in zip(axes, (lambda n: "+" not in n and n not in ("nsga2", "tpe"),
                               lambda n: n in ("grid", "random") or n.startswith(("nsga2", "tpe")))):
        for r in (r for r in results if keep(r.name)):
            style = "-" if r.name.startswith("pareto_sh") or "+" in r.name else ("--" if "asha" in r.name else ":")
            line, = ax.plot(budgets, np.median(r.fractions, axis=0), style, marker=".", label=r.name)
            ax.fill_between(budgets, np.percentile(r.fractions, 10, axis=0), np.percentile(r.fractions, 90, axis=0),
                            color=line.get_color(), alpha=0.10)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.axvline(0.35, color="grey", lw=0.8, ls="--")
        if bounds is not None:
            ax.axvline(bounds.skip_all, color="black", lw=0.8, ls=":",
                       label=f"oracle bound: {bounds.runs} full runs ({bounds.skip_all:.0%})")
            ax.axvline(bounds.first_rung, color="black", lw=0.8, ls="-.",
                       label=f"oracle bound: all to rung 1, {bounds.runs} on ({bounds.first_rung:.0%})")
        ax.set(xlabel="compute (fraction of the full grid's trial-steps)", ylim=(0, 1.02), xlim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("hypervolume / full grid's (median, 10-90% band)")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--orders", type=int, default=20, help="seeded arrival orders / sampler seeds")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--plot", type=Path, default=ROOT / "bench" / "data" / "search_replay.png")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "data" / "search_replay.json")
    p.add_argument("--only", default="", help="comma-separated method names to run (default: all; "
                                                "the target lines need pareto_sh and mo_asha)")
    p.add_argument("--rungs", default="", help="comma-separated steps where our scheduler decides (recorded "
                                                 "evaluation steps before the last; default: all of them); "
                                                 "MO-ASHA's grace period is the first")
    p.add_argument("--objectives", default=",".join(OBJECTIVES),
                   help=f"two recorded metrics with a min/max direction in the registry (default {','.join(OBJECTIVES)})")
    args = p.parse_args(argv)
    objectives = tuple(m.strip() for m in args.objectives.split(",") if m.strip())
    bad = [m for m in objectives if not is_metric(m) or direction(m) not in ("minimize", "maximize")]
    if len(objectives) != 2 or bad:
        print(f"error: --objectives={args.objectives!r}: expected two metrics of the registry with a min/max "
              f"direction ({', '.join(bad) or 'got ' + str(len(objectives))}); see `sage metrics`", file=sys.stderr)
        return 2
    for name in ("orders", "workers"):
        if getattr(args, name) < 1:
            print(f"error: --{name}={getattr(args, name)}: must be >= 1", file=sys.stderr)
            return 2
    from sage_core.errors import SageError

    try:
        table = load_table(args.table, objectives=objectives)
    except SageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rungs: tuple[int, ...] | None = None
    if args.rungs.strip():
        try:
            rungs = tuple(sorted({int(x) for x in args.rungs.split(",") if x.strip()}))
        except ValueError:
            rungs = ()
    if rungs is not None and (not rungs or not set(rungs) <= set(table.steps[:-1])):
        print(f"error: --rungs={args.rungs!r}: expected recorded evaluation steps before the last, from "
              f"{list(table.steps[:-1])}", file=sys.stderr)
        return 2
    rungs = rungs or tuple(table.steps[:-1])
    scorer = Scorer(table)
    n, total = len(table.params), table.total
    print(f"objectives: {', '.join(f'{direction(m)} {m}' for m in objectives)}")
    print(f"table {args.table.name}: {n} configurations x evaluations at steps {list(table.steps)}; "
          f"grid compute {n * total} trial-steps; grid hypervolume {scorer.grid_hv:.6g} "
          f"(ref {', '.join(f'{m}={v:.4f}' for m, v in zip(table.objectives, scorer.ref))}); "
          f"{args.orders} orders, {args.workers} workers; rungs {list(rungs)}")
    bounds = lower_bounds(table)
    how = "exact, by enumeration of the front" if bounds.exact else "greedy"
    print(f"lower bounds (oracle that knows the table; {how}"
          f", {sum(1 for _ in bounds.best_by_count)} front points): best HV/grid of k full runs "
          + ", ".join(f"k={k}: {f:.3f}" for k, f in enumerate(bounds.best_by_count, 1)))
    print(f"  >= {bounds.target:.0%} of the grid's HV needs {bounds.runs} full runs: {bounds.skip_all:.1%} of the "
          f"grid's "
          f"compute if configurations may be skipped; {bounds.first_rung:.1%} if every configuration runs to the "
          f"first evaluation (step {table.steps[0]})")
    for eta in (2, 3):
        finished, spent = synchronous_halving(table, rungs=rungs, eta=eta)
        print(f"synchronous halving (all configurations at a rung before deciding; eta={eta}): HV/grid "
              f"{scorer.fraction(finished):.3f} at {spent:.1%} compute ({len(finished)} finish)")
    shown = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
    print(f"{'HV/grid: median [p10,p90]':<24}" + "".join(f"{f'@ {b:.0%} compute':>20}" for b in shown)
          + f"{'spent':>10}")
    results = []
    only = [m.strip() for m in args.only.split(",") if m.strip()] or None
    for r in run_all(table, orders=args.orders, workers=args.workers, only=only, rungs=rungs):
        results.append(r)
        print(summary(r, BUDGETS, shown), flush=True)
    by = {r.name: r for r in results}
    j = BUDGETS.index(0.35)
    for name in (f"{kind}(eta={eta})" for eta in (2, 3) for kind in ("pareto_sh", "pareto_sh_noise")):
        if name not in by:
            continue
        ours = by[name]
        hit = float((ours.fractions[:, j] >= 0.95).mean())
        ended = float(((ours.spent <= 0.35) & (ours.fractions[:, -1] >= 0.95)).mean())
        print(f"target 1 ({name}): >= 95% of the grid's HV at 35% compute in {hit:.0%} of orders (target >= 90%: "
              f"{'met' if hit >= 0.9 else 'NOT met'}); its whole run used <= 35% and ended >= 95% in {ended:.0%}")
    if not HAVE_SYNE_TUNE:
        print("target 2: not measured: syne-tune is not installed (pip install -c constraints.txt -e '.[bench]')")
    for eta, kind, other in itertools.product((2, 3), ("pareto_sh", "pareto_sh_noise"),
                                              ("mo_asha", "mo_asha_ranked") if HAVE_SYNE_TUNE else ()):
        if f"{kind}(eta={eta})" not in by or f"{other}(eta={eta})" not in by:
            continue
        o, a = by[f"{kind}(eta={eta})"], by[f"{other}(eta={eta})"]
        diff = np.median(o.fractions, 0) - np.median(a.fractions, 0)
        worse = [f"{b:.0%} ({d:+.3f})" for b, d in zip(BUDGETS, diff) if d < 0]
        paired = (o.fractions >= a.fractions - 1e-12).mean()
        print(f"target 2 {kind}(eta={eta}) vs {other}: median HV/grid difference per budget min {diff.min():+.3f}, "
              f"max {diff.max():+.3f}; budgets where ours is lower: {', '.join(worse) or 'none'}; "
              f"(order, budget) pairs where ours >= it: {paired:.0%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"table": args.table.name, "objectives": list(objectives), "orders": args.orders, "workers": args.workers,
                                     "rungs": list(rungs),
                                     "budgets": list(BUDGETS), "grid_hv": scorer.grid_hv, "ref": list(scorer.ref),
                                     "lower_bounds": {"target": bounds.target,
                                                      "best_by_count": list(bounds.best_by_count),
                                                      "runs": bounds.runs, "exact": bounds.exact,
                                                      "skip_all": bounds.skip_all, "first_rung": bounds.first_rung},
                                     "methods": {r.name: {"fractions": r.fractions.tolist(), "spent": r.spent.tolist()}
                                                 for r in results}}, indent=1), encoding="utf-8")
    plot(results, BUDGETS, args.plot, title=f"replay of {n} recorded SAGE curves ({' vs '.join(objectives)}), "
                                            f"{args.workers} workers, {args.orders} orders", bounds=bounds)
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
