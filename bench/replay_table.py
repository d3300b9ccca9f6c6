"""The recorded curves table, compute accounting and scoring of the search replay bench.

Compute is counted in training-step equivalents: a trial's steps plus ``eval_cost`` per evaluation
it is evaluated at (one text evaluation costs about 6 training steps on the recording machine:
``eval_cost`` = median evaluation seconds / median seconds per training step, read from the
table). The full grid's compute is every configuration to the run length with ONE evaluation at
the end (the grid decides nothing earlier), ``n x (T + eval_cost)``; budgets are fractions of it.

Score: hypervolume of the finished configurations' points on the *seed-averaged* front (each
configuration's final objectives averaged over every recorded training seed), as a fraction of
the hypervolume of all configurations' averaged points; reference point = the averaged grid's
nadir pushed out by 10% of its range.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis import dominance

OBJECTIVES = ("matched_auc", "util_sib")
REF_MARGIN = 0.1


@dataclass(frozen=True)
class CurveTable:
    """``values[c, j, k]``: objective k of configuration c at evaluation ``steps[j]``; ``bounds[c, j, k]``
    (optional): its bootstrap interval ``(lo, hi)``, reported as ``<objective>_lo``/``_hi``;
    ``eval_cost``: one evaluation in training steps."""

    params: list[dict[str, Any]]
    steps: tuple[int, ...]
    values: np.ndarray
    objectives: tuple[str, ...] = OBJECTIVES
    bounds: np.ndarray | None = None
    eval_cost: float = 0.0

    @property
    def total(self) -> int:
        return self.steps[-1]

    @property
    def grid_compute(self) -> float:
        return len(self.params) * (self.total + self.eval_cost)

    def config_of(self, params: dict[str, Any]) -> int:
        return self.params.index({k: params[k] for k in self.params[0]})

    def result(self, config: int, step: int) -> dict[str, float]:
        j = self.steps.index(step)
        out = {m: float(self.values[config, j, k]) for k, m in enumerate(self.objectives)}
        if self.bounds is not None:
            for k, m in enumerate(self.objectives):
                out[f"{m}_lo"], out[f"{m}_hi"] = (float(v) for v in self.bounds[config, j, k])
        return out


def _eval_cost(rows: list[dict[str, Any]], total: int) -> float:
    """Median evaluation seconds over median seconds per training step (``train_s`` is cumulative)."""
    if not rows or "eval_s" not in rows[0] or "train_s" not in rows[0]:
        return 0.0
    per_step = float(np.median([r["train_s"] / total for r in rows if r["step"] == total]))
    return round(float(np.median([r["eval_s"] for r in rows])) / per_step, 2)


def load_table(path: Path, *, objectives: tuple[str, ...] = OBJECTIVES) -> CurveTable:
    """Read a recording; one line naming the file and what is missing when it is not one."""
    import pyarrow.parquet as pq

    from sage_core.defs.errors import DataError

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"--tables={path}: not a readable Parquet file ({exc}); record one with "
                        "bench/record_curves.py") from None
    meta = json.loads((table.schema.metadata or {}).get(b"sage_record", b"{}") or b"{}")
    names = list(meta.get("settings", {}).get("grid", {}))
    need = ["config_id", "step", *names, *objectives]
    missing = [c for c in need if c not in table.column_names] or ([] if names else ["grid settings metadata"])
    if missing:
        raise DataError(f"--tables={path}: lacks {missing}; expected a table written by bench/record_curves.py")
    ends = [f"{m}_{e}" for m in objectives for e in ("lo", "hi")]
    has_bounds = all(c in table.column_names for c in ends)
    timing = [c for c in ("eval_s", "train_s") if c in table.column_names]
    rows = table.select(need + (ends if has_bounds else []) + timing).to_pylist()
    ids = sorted({r["config_id"] for r in rows})
    steps = tuple(sorted({r["step"] for r in rows}))
    cell = {(r["config_id"], r["step"]): r for r in rows}
    gaps = [(c, s) for c in ids for s in steps if (c, s) not in cell]
    if gaps:
        raise DataError(f"--tables={path}: {len(gaps)} (config, step) cells missing, e.g. {gaps[:3]}; "
                        "finish the recording (rerun bench/record_curves.py with the same arguments)")
    values = np.asarray([[[cell[c, s][m] for m in objectives] for s in steps] for c in ids], dtype=float)
    params = [{n: cell[c, steps[0]][n] for n in names} for c in ids]
    bounds = (np.asarray([[[[cell[c, s][f"{m}_lo"], cell[c, s][f"{m}_hi"]] for m in objectives] for s in steps]
                          for c in ids], dtype=float) if has_bounds else None)
    full = int(np.prod([len(meta["settings"]["grid"][n]) for n in names]))
    if len(params) != full:  # the samplers propose any grid point, so every one must be recorded
        raise DataError(f"--tables={path}: {len(params)} of the grid's {full} configurations are recorded; "
                        "finish the recording (rerun bench/record_curves.py with the same arguments)")
    return CurveTable(params=params, steps=steps, values=values, objectives=objectives, bounds=bounds,
                      eval_cost=_eval_cost(rows, steps[-1]) if len(timing) == 2 else 0.0)


def averaged_finals(tables: Iterable[CurveTable]) -> np.ndarray:
    """Each configuration's final objectives averaged over the tables (training seeds); the tables must
    hold the same configurations in the same order."""
    tables = list(tables)
    if any(t.params != tables[0].params or t.steps[-1] != tables[0].steps[-1] for t in tables):
        from sage_core.defs.errors import DataError

        raise DataError("--tables: the tables hold different configurations or run lengths; give recordings "
                        "of one grid (bench/record_curves.py with different --seed)")
    return np.mean([t.values[:, -1, :] for t in tables], axis=0)


@dataclass(frozen=True)
class Scorer:
    """Hypervolume of a set of configurations' points ``finals`` (default: the table's own finals; the
    bench passes the seed-averaged ones) as a fraction of all configurations'."""

    table: CurveTable
    finals: np.ndarray | None = None
    ref: np.ndarray = field(init=False)
    grid_hv: float = field(init=False)
    _memo: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.finals is None:
            object.__setattr__(self, "finals", self.table.values[:, -1, :])
        signs = dominance.objective_signs(list(self.table.objectives))
        pts = np.asarray(self.finals) * signs
        low, high = pts.min(0), pts.max(0)
        object.__setattr__(self, "ref", (high + REF_MARGIN * (high - low)) * signs)
        object.__setattr__(self, "grid_hv", self.hv(range(len(pts))))

    def hv(self, configs: Iterable[int]) -> float:
        key = frozenset(configs)
        if key not in self._memo:
            signs = dominance.objective_signs(list(self.table.objectives))
            pts = np.asarray(self.finals)[sorted(key)] * signs
            self._memo[key] = dominance.hypervolume(pts, list(np.asarray(self.ref) * signs)) if key else 0.0
        return self._memo[key]

    def fraction(self, configs: Iterable[int]) -> float:
        return self.hv(configs) / self.grid_hv


@dataclass(frozen=True)
class LowerBounds:
    """The least compute (fraction of the grid's) any method needs to reach ``target`` of the front's
    hypervolume, knowing the front in advance (an oracle)."""

    target: float
    best_by_count: tuple[float, ...]  # [k-1]: the best HV fraction of any k configurations run to T
    runs: int  # the fewest configurations run to T whose points reach ``target``
    exact: bool  # True: by enumeration; False: greedy (then ``runs`` is an upper bound on the fewest)
    skip_all: float  # runs x (T + e) / grid
    first_rung: float  # all to the first evaluation, ``runs`` on: (n (s1 + e) + runs (T - s1 + e)) / grid


def lower_bounds(table: CurveTable, *, target: float = 0.95, max_enumerated: int = 16,
                 scorer: Scorer | None = None) -> LowerBounds:
    """Every configuration costs the same to finish, so the cheapest subset reaching ``target`` is a
    smallest one, and one can be taken among the front's points (swapping a dominated configuration for
    one that dominates it never lowers the hypervolume). Exact by enumerating the front's subsets by
    size when the front has at most ``max_enumerated`` points; greedy (largest gain first) beyond."""
    scorer = scorer or Scorer(table)
    pts = dominance.minimised(np.asarray(scorer.finals), dominance.objective_signs(list(table.objectives)))
    front = [int(i) for i in np.flatnonzero(dominance.front_mask(pts))]
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
    n, total, first, e = len(table.params), table.total, table.steps[0], table.eval_cost
    grid = table.grid_compute
    return LowerBounds(target=target, best_by_count=tuple(best), runs=runs, exact=exact,
                       skip_all=runs * (total + e) / grid,
                       first_rung=(n * (first + e) + runs * (total - first + e)) / grid)


def greedy_by_values(table: CurveTable, values: np.ndarray, k: int) -> list[int]:
    """The ``k`` configurations a method that trusts ``values`` (rows: configurations, in the table's
    objectives) would finish: largest hypervolume gain first, ties to the lower index."""
    signs = dominance.objective_signs(list(table.objectives))
    pts = values * signs
    low, high = pts.min(0), pts.max(0)
    ref = list(high + REF_MARGIN * (high - low))
    chosen: list[int] = []
    for _ in range(min(k, len(pts))):
        gains = [-1.0 if c in chosen else dominance.hypervolume(pts[[*chosen, c]], ref) for c in range(len(pts))]
        chosen.append(int(np.argmax(gains)))
    return chosen


def synchronous_halving(table: CurveTable, *, rungs: tuple[int, ...], eta: int) -> tuple[list[int], float]:
    """Successive halving with every decision on full information: all surviving configurations report
    at a rung before the top ``ceil(n / eta)`` in NSGA-II order go on; returns the configurations that
    finish and the compute fraction spent (each rung and the end evaluated once)."""
    signs = dominance.objective_signs(list(table.objectives))
    alive, spent, prev = list(range(len(table.params))), 0.0, 0
    for r in rungs:
        spent += len(alive) * (r - prev + table.eval_cost)
        prev = r
        ranks, crowd = dominance.ranks_and_crowding(dominance.minimised(table.values[alive, table.steps.index(r)],
                                                                        signs))
        order = sorted(range(len(alive)), key=lambda i: (ranks[i], -crowd[i], alive[i]))
        alive = [alive[i] for i in order[:math.ceil(len(alive) / eta)]]
    spent += len(alive) * (table.total - prev + table.eval_cost)
    return alive, spent / table.grid_compute


def blind_wave(scorer: Scorer, n: int, wave: int, *, limit: int = 20000, seed: int = 0) -> np.ndarray:
    """Fractions of the front held by a first wave of ``wave`` configurations out of ``n`` chosen without
    any information (every subset equally likely: what a cold method that treats the hyperparameter
    values as exchangeable holds until its first runs finish): every subset when there are at most
    ``limit``, else ``limit`` seeded draws."""
    if math.comb(n, wave) <= limit:
        subsets: Iterable[Iterable[int]] = itertools.combinations(range(n), wave)
    else:
        rng = np.random.default_rng(seed)
        subsets = (rng.choice(n, wave, replace=False) for _ in range(limit))
    return np.asarray([scorer.fraction(int(c) for c in s) for s in subsets])


def finished_at(table: CurveTable, workers: int, budget: float) -> int:
    """Configurations run to the end within ``budget`` (a fraction of the grid's compute) by a method
    that runs each to the end, ``workers`` at a time and every worker kept busy, as the grid does:
    every run costs the same (``T + eval_cost``), so they finish in waves of ``workers`` (the last
    may be smaller). A method that leaves workers idle can finish more, up to ``floor(budget x n)``."""
    n = len(table.params)
    runs = math.floor(budget * n + 1e-9)  # full runs' worth of compute
    return min(n, workers * (runs // workers) if runs < n else n)
