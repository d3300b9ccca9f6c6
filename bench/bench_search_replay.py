"""Tabular search benchmark: replay recorded SAGE learning curves through each search method.

The tables (``bench/record_curves.py``, one per training seed of the same grid) hold every
configuration's text objectives at each evaluation step up to the run length T. Each table is
replayed in turn as the seed a sweep would see (``replay_loop``: Tune's execution with
``--workers`` trials at a time, evaluations counted as compute); every method runs over
``--orders`` seeded arrival orders (or sampler seeds). Methods: ``replay_methods``. Accounting and
score: ``replay_table`` (budgets are fractions of the grid's compute with one evaluation per
configuration; the score is the hypervolume of the finished configurations on the seed-averaged
front, as a fraction of the whole grid's). The warm-start arm (``ehvi_warm``) starts from the other
tables' results. ``ehvi_probe``, ``pareto_sh(eta=3)`` and ``ehvi_known_kernel`` (cold ``ehvi`` whose
surrogate's kernel hyperparameters are fitted beforehand on every configuration of every table and held
fixed: the right surrogate shape known in advance, an upper reference for a GP search) run only when
named in ``--only``.

Printed per table: the median fraction (its 95% bootstrap interval) and 10th percentile at each
budget; for the new search the target of issue 24 (at 35%: median >= .90, p10 >= .80, and no
budget from 10% to 100% where the median paired difference to the grid, same order, is negative);
and the oracle bounds on the seed-averaged front.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_search_replay.py \
        [--tables A.parquet,B.parquet] [--objectives matched_auc,util_sib] [--orders 100] [--json P] [--plot P]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from replay_loop import Method, Trace, replay  # noqa: E402,F401
from replay_methods import Grid, methods, rank_priority, table_prior  # noqa: E402,F401
from replay_table import (  # noqa: E402,F401
    OBJECTIVES,
    CurveTable,
    Scorer,
    averaged_finals,
    blind_wave,
    finished_at,
    greedy_by_values,
    load_table,
    lower_bounds,
    synchronous_halving,
)

from sage_core.defs.metrics import direction, is_metric  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
DEFAULT_TABLES = (DATA / "sage_minilm_curves.parquet", DATA / "sage_minilm_curves_seed1.parquet")
BUDGETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
SHOWN = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
OPTIONAL = {"ehvi_probe", "pareto_sh(eta=3)", "ehvi_known_kernel"}  # run only when named in --only
TARGET = {"budget": 0.35, "median": 0.90, "p10": 0.80, "paired_from": 0.10}


@dataclass(frozen=True)
class MethodResult:
    name: str
    fractions: np.ndarray  # [orders, budgets]: HV fraction at each compute budget
    spent: np.ndarray  # [orders]: compute fraction the method used (1 = capped at the grid's)


def run_all(table: CurveTable, *, orders: int, workers: int, scorer: Scorer | None = None,
            only: list[str] | None = None, first_rung: int | None = None,
            prior: list | None = None, budgets: tuple[float, ...] = BUDGETS, known: list[CurveTable] | None = None):
    """Every method (or those named in ``only``) over seeds ``0 .. orders-1``; ``known``: every table
    (for ``ehvi_known_kernel``)."""
    scorer = scorer or Scorer(table)
    grid = table.grid_compute
    for name, make in methods(table, workers=workers, first_rung=first_rung, prior=prior, known=known).items():
        if (only and name not in only) or (not only and name in OPTIONAL):
            continue
        traces: list[Trace] = [replay(table, make(seed), workers=workers, cap=grid) for seed in range(orders)]
        yield MethodResult(name=name, fractions=np.asarray([t.fractions(scorer, budgets, grid) for t in traces]),
                           spent=np.asarray([min(t.compute, grid) / grid for t in traces]))


def median_interval(col: np.ndarray, *, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """Median and its 95% percentile-bootstrap interval (seeded resampling of the orders)."""
    rng = np.random.default_rng(seed)
    boot = np.median(col[rng.integers(0, len(col), (n, len(col)))], axis=1)
    return float(np.median(col)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def summary(r: MethodResult) -> str:
    cells = []
    for b in SHOWN:
        col = r.fractions[:, BUDGETS.index(b)]
        med, lo, hi = median_interval(col)
        cells.append(f"{med:.3f} [{lo:.2f},{hi:.2f}] {np.percentile(col, 10):.2f}")
    return f"{r.name:<20}" + "".join(f"{c:>24}" for c in cells) + f"{np.median(r.spent):>8.3f}"


def target_check(r: MethodResult, grid: MethodResult) -> dict:
    """Issue 24's target for one arm: median and p10 at 35%, and the paired comparison with the grid."""
    j = BUDGETS.index(TARGET["budget"])
    col = r.fractions[:, j]
    paired = np.median(r.fractions - grid.fractions, axis=0)
    from_ = BUDGETS.index(TARGET["paired_from"])
    worse = [(b, float(d)) for b, d in zip(BUDGETS[from_:], paired[from_:], strict=True) if d < -1e-12]
    out = {"median": float(np.median(col)), "p10": float(np.percentile(col, 10)), "paired_worse": worse}
    out["met"] = out["median"] >= TARGET["median"] and out["p10"] >= TARGET["p10"] and not worse
    return out


def oracle_lines(table: CurveTable, scorer: Scorer, *, first_rung: int, prior: CurveTable | None,
                 workers: int) -> list[str]:
    """What is reachable on the seed-averaged front: the oracle's fewest full runs, what a first wave
    chosen without information holds, and two honest policies (all to the first rung then the best k
    by this seed's rung values; the best k by the other seed's finals) with their compute, evaluations
    counted."""
    first = min(workers, len(table.params))
    wave = blind_wave(scorer, len(table.params), first)
    lines = [f"  a first wave of {first} chosen without information (all it holds until "
             f"{first / len(table.params):.0%} of the compute): median {np.median(wave):.3f}, "
             f"p10 {np.percentile(wave, 10):.3f}, "
             f"P(>= {TARGET['median']:.2f}) {np.mean(wave >= TARGET['median']):.3f}"]
    k = finished_at(table, workers, TARGET["budget"])
    if k > first:
        held = blind_wave(scorer, len(table.params), k)
        lines.append(f"  a method that ranks configurations without using what their hyperparameter values share "
                     f"(exchangeable: the grid in a random order is one) holds {k} chosen blind at "
                     f"{TARGET['budget']:.0%}: median {np.median(held):.3f}, p10 {np.percentile(held, 10):.3f}, "
                     f"P(>= {TARGET['median']:.2f}) {np.mean(held >= TARGET['median']):.3f}")
    for target in (0.90, 0.95):
        b = lower_bounds(table, target=target, scorer=scorer)
        lines.append(f"  oracle (knows the averaged front): {target:.0%} needs {b.runs} full runs = {b.skip_all:.1%} "
                     f"of the grid; {b.first_rung:.1%} if every configuration first runs to step {table.steps[0]}")
    b = lower_bounds(table, target=0.90, scorer=scorer)
    lines.append("  oracle best k full runs: " + ", ".join(f"k={k}: {f:.3f}" for k, f in
                                                           enumerate(b.best_by_count[:8], 1)))
    n, e, total, grid = len(table.params), table.eval_cost, table.total, table.grid_compute
    j = table.steps.index(first_rung)
    picks = greedy_by_values(table, table.values[:, j, :], 8)
    def cost(k: int) -> float:
        return (n * (first_rung + e) + k * (total - first_rung + e)) / grid

    lines.append(f"  all to step {first_rung}, then the best k by this seed's step-{first_rung} values (greedy HV): "
                 + ", ".join(f"k={k}: {scorer.fraction(picks[:k]):.3f} @{cost(k):.0%}" for k in range(2, 9)))
    if prior is not None:
        picks = greedy_by_values(table, prior.values[:, -1, :], 8)
        lines.append("  the best k by the other seed's finals, run to the end: "
                     + ", ".join(f"k={k}: {scorer.fraction(picks[:k]):.3f} @{k * (total + e) / grid:.0%}"
                                 for k in range(2, 9)))
    return lines


def plot(per_table: dict[str, list[MethodResult]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_table), figsize=(6 * len(per_table), 5), sharey=True, squeeze=False)
    for ax, (name, results) in zip(axes[0], per_table.items(), strict=True):
        for r in results:
            style = "-" if r.name.startswith("ehvi") else ("--" if "asha" in r.name or "pareto" in r.name else ":")
            line, = ax.plot(BUDGETS, np.median(r.fractions, axis=0), style, marker=".", label=r.name)
            ax.fill_between(BUDGETS, np.percentile(r.fractions, 10, axis=0), np.percentile(r.fractions, 90, axis=0),
                            color=line.get_color(), alpha=0.08)
        ax.axhline(TARGET["median"], color="grey", lw=0.8, ls="--")
        ax.axvline(TARGET["budget"], color="grey", lw=0.8, ls="--")
        ax.set(title=name, xlabel="compute (fraction of the grid's, evaluations counted)", ylim=(0, 1.02), xlim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("HV / seed-averaged grid front (median, 10-90% band)")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--tables", default=",".join(str(t) for t in DEFAULT_TABLES),
                   help="comma-separated recordings of one grid, one per training seed (scored on their average)")
    p.add_argument("--objectives", default=",".join(OBJECTIVES),
                   help="two recorded metrics with a min/max direction in the registry (default "
                        f"{','.join(OBJECTIVES)})")
    p.add_argument("--orders", type=int, default=100, help="seeded arrival orders / sampler seeds")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--first-rung", type=int, default=12, help="ehvi_probe's probe step (a recorded step)")
    p.add_argument("--only", default="", help="comma-separated method names (default: all)")
    p.add_argument("--plot", type=Path, default=DATA / "search_replay.png")
    p.add_argument("--json", type=Path, default=DATA / "search_replay.json")
    return p.parse_args(argv)


def _check(args: argparse.Namespace) -> str | None:
    objectives = tuple(m.strip() for m in args.objectives.split(",") if m.strip())
    bad = [m for m in objectives if not is_metric(m) or direction(m) not in ("minimize", "maximize")]
    if len(objectives) != 2 or bad:
        return (f"--objectives={args.objectives!r}: expected two metrics of the registry with a min/max direction "
                f"({', '.join(bad) or 'got ' + str(len(objectives))}); see `sage metrics`")
    for name in ("orders", "workers"):
        if getattr(args, name) < 1:
            return f"--{name}={getattr(args, name)}: must be >= 1"
    return None


def _replay_table(path: Path, table: CurveTable, others: list[CurveTable], finals: np.ndarray, args: argparse.Namespace,
                  only: list[str] | None) -> tuple[list[MethodResult], dict]:
    """Every method replayed on one table (the first of ``others`` is its prior), printed as each ends:
    its results and what the JSON records of it."""
    scorer = Scorer(table, finals)
    prior = table_prior(others[0]) if others else None
    print(f"\n== {path.name}: {len(table.params)} configurations, evaluations at {list(table.steps)}; one "
          f"evaluation = {table.eval_cost:.2f} steps; grid compute {table.grid_compute:.0f}")
    oracle = oracle_lines(table, scorer, first_rung=args.first_rung, prior=others[0] if others else None,
                          workers=args.workers)
    print(*oracle, sep="\n")
    print(f"{'HV/avg front: median [95% CI] p10':<20}" + "".join(f"{f'@ {b:.0%}':>24}" for b in SHOWN)
          + f"{'spent':>8}")
    results = []
    for r in run_all(table, orders=args.orders, workers=args.workers, scorer=scorer, only=only,
                     first_rung=args.first_rung, prior=prior, known=[table, *others]):
        results.append(r)
        print(summary(r), flush=True)
    by = {r.name: r for r in results}
    checks = {name: target_check(by[name], by["grid"]) for name in ("ehvi", "ehvi_warm", "ehvi_known_kernel")
              if name in by and "grid" in by}
    for name, c in checks.items():
        print(f"target ({name}): median {c['median']:.3f}, p10 {c['p10']:.3f} at 35%; budgets where the median "
              f"paired difference to the grid is negative: "
              f"{', '.join(f'{b:.0%} ({d:+.3f})' for b, d in c['paired_worse']) or 'none'} -> "
              f"{'MET' if c['met'] else 'NOT met'}")
    return results, {"eval_cost": table.eval_cost, "grid_hv": scorer.grid_hv, "ref": list(scorer.ref),
                     "oracle": oracle, "targets": checks,
                     "methods": {r.name: {"fractions": np.round(r.fractions, 4).tolist(),
                                          "spent": np.round(r.spent, 4).tolist()} for r in results}}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from sage_core.defs.errors import SageError

    objectives = tuple(m.strip() for m in args.objectives.split(",") if m.strip())
    paths = [Path(t.strip()) for t in args.tables.split(",") if t.strip()]
    try:
        tables = [load_table(p, objectives=objectives) for p in paths]
        finals = averaged_finals(tables)
    except SageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.first_rung not in tables[0].steps[:-1]:
        print(f"error: --first-rung={args.first_rung}: expected a recorded step before the last, from "
              f"{list(tables[0].steps[:-1])}", file=sys.stderr)
        return 2
    only = [m.strip() for m in args.only.split(",") if m.strip()] or None
    print(f"objectives: {', '.join(f'{direction(m)} {m}' for m in objectives)}; {len(tables)} tables scored on "
          f"their seed-averaged front; {args.orders} orders, {args.workers} workers; ehvi_probe probes at step "
          f"{args.first_rung}")
    out: dict = {"tables": [p.name for p in paths], "objectives": list(objectives), "orders": args.orders,
                 "workers": args.workers, "first_rung": args.first_rung, "budgets": list(BUDGETS), "target": TARGET,
                 "per_table": {}}
    per_table: dict[str, list[MethodResult]] = {}
    for i, (path, table) in enumerate(zip(paths, tables, strict=True)):
        others = [t for k, t in enumerate(tables) if k != i]
        per_table[path.name], out["per_table"][path.name] = _replay_table(path, table, others, finals, args, only)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out) + "\n", encoding="utf-8")
    plot(per_table, args.plot, title=f"replay of recorded SAGE curves ({' vs '.join(objectives)}), {args.workers} "
                                     f"workers, {args.orders} orders, evaluations counted")
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
