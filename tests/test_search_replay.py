"""bench/bench_search_replay.py on a tiny synthetic curve table: seeded runs repeat exactly, and the
full grid's hypervolume and its anytime fractions match a hand computation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search_replay", ROOT / "bench" / "bench_search_replay.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def table(bench):
    # 6 configurations, evaluations at steps 1, 2, 4: matched_auc (the default objective) and util_sib fall with steps.
    rng = np.random.default_rng(7)
    steps = (1, 2, 4)
    final = np.column_stack([rng.uniform(0.90, 0.99, 6), rng.uniform(0.5, 0.9, 6)])
    values = np.stack([final + (4 - s) * np.array([0.002, 0.02]) + rng.normal(0, 0.01, (6, 2)) for s in steps], axis=1)
    values[:, -1, :] = final
    return bench.CurveTable(params=[{"a": i} for i in range(6)], steps=steps, values=values)


def staircase_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume (both minimised) by summing the dominated area column by column."""
    xs = sorted({float(x) for x in points[:, 0]} | {float(ref[0])})
    area = 0.0
    for left, right in zip(xs, xs[1:], strict=False):
        ys = [y for x, y in points if x <= left]
        if ys:
            area += (right - left) * max(0.0, ref[1] - min(ys))
    return area


def test_replay_is_deterministic_under_a_seed(bench, table):
    prior = bench.table_prior(table)
    first = {r.name: r for r in bench.run_all(table, orders=3, workers=2, prior=prior)}
    second = {r.name: r for r in bench.run_all(table, orders=3, workers=2, prior=prior)}
    asha = {"mo_asha(eta=2)", "mo_asha(eta=3)", "mo_asha_ranked(eta=2)", "mo_asha_ranked(eta=3)"}
    assert set(first) == {"grid", "pareto_sh(eta=2)", "nsga2", "tpe", "ehvi", "ehvi_warm"} | asha
    for name, r in first.items():
        np.testing.assert_array_equal(r.fractions, second[name].fractions, err_msg=name)
        np.testing.assert_array_equal(r.spent, second[name].spent, err_msg=name)
    # Different seeds are different orders: the grid's anytime curve is not the same for all of them.
    assert len({tuple(row) for row in first["grid"].fractions}) > 1


def test_full_grid_reaches_fraction_one_and_matches_a_hand_computation(bench, table):
    scorer = bench.Scorer(table)
    finals = table.values[:, -1, :] * np.array([1.0, -1.0])  # matched_auc min, util_sib max
    high, low = finals.max(0), finals.min(0)
    ref = high + 0.1 * (high - low)
    assert scorer.grid_hv == pytest.approx(staircase_hv(finals, ref), rel=1e-12)

    order = [int(i) for i in np.random.default_rng(0).permutation(6)]
    trace = bench.replay(table, bench.Grid(order), workers=2, cap=24.0)  # no evaluation cost in this table
    # Two workers in lockstep: trials finish in pairs at 8, 16 and 24 trial-steps.
    assert trace.completions == [(8.0, order[0]), (8.0, order[1]), (16.0, order[2]), (16.0, order[3]),
                                 (24.0, order[4]), (24.0, order[5])]
    assert trace.compute == 24.0
    fr = trace.fractions(scorer, (0.25, 0.5, 1.0), 24.0)
    assert fr[0] == 0.0  # 6 trial-steps: nothing finished yet
    assert fr[1] == pytest.approx(staircase_hv(finals[order[:2]], ref) / staircase_hv(finals, ref), rel=1e-12)
    assert fr[2] == 1.0

    grid = next(bench.run_all(table, orders=4, workers=2, only=["grid"]))
    np.testing.assert_array_equal(grid.fractions[:, -1], 1.0)
    np.testing.assert_array_equal(grid.spent, 1.0)


def test_ranked_mo_asha_stops_what_the_asha_rule_stops(bench):
    from syne_tune.optimizer.schedulers.asha import Bracket
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    values = [0.9, 0.5, 0.6, 0.7, 0.8]  # totally ordered (both objectives equal), the first is the worst
    # ASHA's rule, by hand: stop when the new trial's position among the n recorded / n > 1 / eta (eta 2).
    expected = ["CONTINUE" if sorted(values[:i + 1]).index(v) / (i + 1) <= 0.5 else "STOP"
                for i, v in enumerate(values)]
    assert expected == ["CONTINUE"] * 4 + ["STOP"]
    got = {}
    for name, priority in {"library": NonDominatedPriority(), "ranked": bench.rank_priority()}.items():
        bracket = Bracket(1, 8, 2, 0, priority)
        got[name] = [bracket.on_result(trial_id=i, cur_iter=1, metrics={"a": v, "b": v}) for i, v in enumerate(values)]
    assert got["ranked"] == expected
    assert got["library"] == ["CONTINUE"] * 5  # syne-tune 0.16.0 keeps the 4th of 5 (see _rank_priority)


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.999])
def test_lower_bounds_match_a_brute_force_over_every_subset(bench, table, target: float):
    import itertools

    finals = table.values[:, -1, :] * np.array([1.0, -1.0])
    high, low = finals.max(0), finals.min(0)
    ref = high + 0.1 * (high - low)
    whole = staircase_hv(finals, ref)
    best = {k: max(staircase_hv(finals[list(sub)], ref) / whole for sub in itertools.combinations(range(6), k))
            for k in range(1, 7)}
    runs = min(k for k, f in best.items() if f >= target)
    got = bench.lower_bounds(table, target=target)
    assert got.exact and got.runs == runs
    assert got.best_by_count == pytest.approx([best[k] for k in range(1, len(got.best_by_count) + 1)], rel=1e-12)
    assert got.skip_all == pytest.approx(runs * 4 / 24)
    assert got.first_rung == pytest.approx((6 * 1 + runs * 3) / 24)  # every config to step 1, `runs` on to 4
    assert bench.lower_bounds(table, target=target, max_enumerated=0).runs >= runs  # greedy: never below


@pytest.mark.parametrize("eta", [2, 3])
def test_synchronous_halving_keeps_the_nsga2_top_of_each_rung(bench, table, eta: int):
    import math

    from tests.pareto_oracle import brute_rank_crowding

    finished, spent = bench.synchronous_halving(table, rungs=(1, 2), eta=eta)
    alive, cost, prev = list(range(6)), 0, 0
    for r in (1, 2):  # by the definition, with the brute-force ranks and crowding
        cost += len(alive) * (r - prev)  # + one evaluation each: this table's eval_cost is 0
        prev = r
        vals = table.values[alive, table.steps.index(r)] * np.array([1.0, -1.0])  # matched_auc min, util_sib max
        ranks, crowd = brute_rank_crowding(vals)
        alive = [alive[i] for i in sorted(range(len(alive)), key=lambda i: (ranks[i], -crowd[i], alive[i]))]
        alive = alive[: math.ceil(len(alive) / eta)]
    cost += len(alive) * (4 - prev)
    assert finished == alive and len(finished) == math.ceil(math.ceil(6 / eta) / eta)
    assert spent == pytest.approx(cost / 24)


def test_a_blind_first_wave_is_every_subset_equally_likely(bench, table):
    import itertools

    finals = table.values[:, -1, :] * np.array([1.0, -1.0])
    high, low = finals.max(0), finals.min(0)
    ref = high + 0.1 * (high - low)
    whole = staircase_hv(finals, ref)
    want = sorted(staircase_hv(finals[list(sub)], ref) / whole for sub in itertools.combinations(range(6), 3))
    scorer = bench.Scorer(table)
    np.testing.assert_allclose(sorted(bench.blind_wave(scorer, 6, 3)), want, rtol=1e-12)
    drawn = bench.blind_wave(scorer, 6, 3, limit=5, seed=3)  # more subsets than the limit: seeded draws
    assert len(drawn) == 5 and set(np.round(drawn, 12)) <= set(np.round(want, 12))
    np.testing.assert_array_equal(drawn, bench.blind_wave(scorer, 6, 3, limit=5, seed=3))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_finished_at_counts_what_the_grid_has_finished_at_each_budget(bench, table, workers):
    trace = bench.replay(table, bench.Grid([3, 1, 4, 0, 5, 2]), workers=workers, cap=table.grid_compute)
    for b in bench.BUDGETS:
        done = [c for spent, c in trace.completions if spent <= b * table.grid_compute + 1e-9]
        assert bench.finished_at(table, workers, b) == len(done), b


def test_the_known_kernel_arm_keeps_the_kernels_fitted_on_every_table(bench, table):
    import replay_methods  # on sys.path once the bench module is loaded

    kernels = replay_methods.known_kernels([table])
    arm = bench.methods(table, workers=2, known=[table])["ehvi_known_kernel"]
    traces = [bench.replay(table, arm(seed), workers=2, cap=table.grid_compute) for seed in (0, 0, 1)]
    assert [c for _, c in traces[0].completions] == [c for _, c in traces[1].completions]  # seeded
    assert sorted(c for _, c in traces[2].completions) == list(range(6))  # every configuration in the end
    method = arm(0)
    model = method.searcher.model
    x, y = np.random.default_rng(0).uniform(size=(5, 1)), np.random.default_rng(1).normal(size=(5, 2))
    fits = model._fitted("params", [str(i) for i in range(5)], x, y)
    assert [f.kernel_ == k for f, k in zip(fits, kernels, strict=True)] == [True, True]  # not re-optimised
