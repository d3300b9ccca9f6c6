"""The replay bench's accounting (bench/replay_*.py): evaluations cost compute, a paused trial resumes
where it stopped, the samplers never run a configuration twice, MO-ASHA's rungs are the table's own
steps at every eta, and the score reads the seed-averaged front. Every number is checked against a
count by hand on a tiny synthetic table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from replay_loop import Method, replay  # noqa: E402
from replay_methods import Grid, SyneTuneScheduled, methods, table_prior  # noqa: E402
from replay_table import CurveTable, Scorer, averaged_finals  # noqa: E402

from analysis.dominance import hypervolume  # noqa: E402

STEPS = (1, 2, 4)


def _table(seed: int = 7, *, eval_cost: float = 0.0, n: int = 6) -> CurveTable:
    rng = np.random.default_rng(seed)
    final = np.column_stack([rng.uniform(0.5, 0.99, n), rng.uniform(0.5, 0.9, n)])
    values = np.stack([final + (4 - s) * np.array([0.002, 0.02]) + rng.normal(0, 0.01, (n, 2)) for s in STEPS], 1)
    values[:, -1, :] = final
    return CurveTable(params=[{"a": i} for i in range(n)], steps=STEPS, values=values, eval_cost=eval_cost)


def test_the_grid_pays_one_evaluation_per_configuration():
    table = _table(eval_cost=1.5)
    order = [3, 1, 4, 0, 5, 2]
    trace = replay(table, Grid(order), workers=2, cap=table.grid_compute)
    per = 4 + 1.5  # 4 steps and the final evaluation
    assert table.grid_compute == 6 * per
    assert trace.completions == [(2 * per * k, c) for k, c in zip((1, 1, 2, 2, 3, 3), order, strict=True)]
    assert trace.compute == 6 * per and trace.evaluations == 6


class _StopAt(Grid):
    """Evaluated at every recorded step; stops every trial at ``at``."""

    eval_steps = STEPS

    def __init__(self, order: list[int], at: int):
        super().__init__(order)
        self.at = at

    def report(self, trial, config, step, result):
        return step < self.at


def test_each_evaluation_a_method_reads_is_charged():
    table = _table(eval_cost=2.0)
    trace = replay(table, _StopAt(list(range(6)), at=2), workers=3, cap=1e9)
    assert trace.completions == []
    assert trace.evaluations == 12  # steps 1 and 2 of six trials
    assert trace.compute == pytest.approx(6 * (2 + 2 * 2.0))  # 2 steps + 2 evaluations each


class _PauseAll(Method):
    """Every trial paused at step 1 until all have reported there; then each resumed once."""

    eval_steps = (1, 4)

    def __init__(self, n: int):
        self.n, self.pending, self.paused, self.reports = n, list(range(n)), [], []
        self.resume: list[int] | None = None

    def next_trial(self):
        if self.pending:
            c = self.pending.pop(0)
            return f"t{c}", c
        if self.resume is None and len(self.paused) == self.n:  # synchronous: once every probe is in
            self.resume = list(self.paused)
        if self.resume:
            c = self.resume.pop(0)
            return f"t{c}", c
        return None

    def report(self, trial, config, step, result):
        self.reports.append((trial, step))
        if step == 1:
            self.paused.append(config)
            return "pause"
        return True


def test_a_paused_trial_resumes_from_its_step_and_is_not_charged_twice():
    table = _table(eval_cost=0.5)
    method = _PauseAll(6)
    trace = replay(table, method, workers=2, cap=1e9)
    assert sorted(c for _, c in trace.completions) == list(range(6))
    assert sorted(method.reports) == sorted([(f"t{c}", 1) for c in range(6)] + [(f"t{c}", 4) for c in range(6)])
    assert trace.compute == pytest.approx(6 * (4 + 2 * 0.5))  # each trial: 4 steps, evaluations at 1 and 4
    # the first completion comes only after all six probes (3 pairs x 1.5) and one finish (3 + 0.5)
    assert trace.completions[0][0] == pytest.approx(6 * 1.5 + 2 * 3.5)


@pytest.mark.parametrize("kind", ["tpe", "nsga2"])
def test_samplers_run_every_configuration_once(kind):
    table = _table(eval_cost=1.0, n=8)
    make = methods(table, workers=2)[kind]
    for seed in range(3):
        trace = replay(table, make(seed), workers=2, cap=table.grid_compute)
        assert sorted(c for _, c in trace.completions) == list(range(8))
        assert trace.compute == pytest.approx(table.grid_compute)


@pytest.mark.parametrize("eta", [2, 3])
def test_mo_asha_rungs_are_the_tables_steps(eta):
    table = _table()
    arm = SyneTuneScheduled(table, list(range(6)), eta=eta, seed=0)
    levels = sorted(level for level, _ in arm.sched.brackets[0].rungs)
    assert levels == [eta ** j for j in range(len(STEPS))]  # told as eta**j at the j-th recorded step
    assert arm.eval_steps == STEPS


def test_score_reads_the_seed_averaged_front():
    a, b = _table(1), _table(2)
    finals = averaged_finals([a, b])
    np.testing.assert_allclose(finals, (a.values[:, -1] + b.values[:, -1]) / 2)
    scorer = Scorer(a, finals)
    pts = finals * np.array([1.0, -1.0])  # matched_auc minimised, util_sib maximised
    ref = pts.max(0) + 0.1 * (pts.max(0) - pts.min(0))
    assert scorer.grid_hv == pytest.approx(hypervolume(pts, list(ref)), rel=1e-12)
    assert scorer.fraction([0, 2]) == pytest.approx(hypervolume(pts[[0, 2]], list(ref)) / scorer.grid_hv, rel=1e-12)


def test_warm_start_arm_gets_the_other_tables_trials():
    a, b = _table(1), _table(2)
    prior = table_prior(b)
    assert [p.metrics["matched_auc"] for p in prior] == list(b.values[:, -1, 0])
    assert set(prior[0].rungs) == set(STEPS[:-1])
    assert "ehvi_warm" in methods(a, workers=2, prior=prior) and "ehvi_warm" not in methods(a, workers=2)
