"""Graded text-level objectives: pure math against independent computations, intervals, and the
sensitivity rule (each objective moves under the damage it stands for and stays put under a copy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from sage_core.evaluation import graded
from sage_core.evaluation.perturb import perturbed


# --- pure functions against independent computations ---------------------------------------------
def test_auc_equals_mann_whitney_u_over_n1_n2():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 57).round(1), rng.normal(0, 1, 91).round(1)  # rounding makes ties
    u = mannwhitneyu(pos, neg).statistic
    assert graded.auc(pos, neg) == pytest.approx(u / (57 * 91))


def test_auc_without_a_pair_matrix_equals_the_pairwise_definition():
    rng = np.random.default_rng(4)
    pos, neg = rng.integers(0, 20, 300).astype(float), rng.integers(0, 20, 200).astype(float)  # many ties
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert graded.auc(pos, neg) == pytest.approx(pairwise)


def test_auc_bootstrap_interval_brackets_and_is_seeded():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 80), rng.normal(0, 1, 300).round(1)

    def ci(seed, reps=400):
        r = np.random.default_rng(seed)
        return graded.interval(graded.auc_boots(pos, neg, neg_counts=graded.counts(300, reps=reps, rng=r), rng=r))

    lo, hi = ci(0)
    assert lo < graded.auc(pos, neg) < hi
    assert ci(0) == (lo, hi) and ci(7) != (lo, hi)
    # each replicate equals the AUC of the explicitly resampled prompts (counts -> repeated items)
    cn = graded.counts(300, reps=3, rng=np.random.default_rng(5))
    boots = graded.auc_boots(pos, neg, neg_counts=cn, rng=np.random.default_rng(6))
    cp = graded.counts(80, reps=3, rng=np.random.default_rng(6))  # what auc_boots drew for the positives
    for r in range(3):
        p_r, n_r = np.repeat(pos, cp[r].astype(int)), np.repeat(neg, cn[r].astype(int))
        assert boots[r] == pytest.approx(graded.auc(p_r, n_r))


def test_rate_boots_is_the_rate_of_the_resampled_scores():
    scores = np.linspace(0, 1, 50)
    thresholds = np.array([0.5, 0.9, -1.0])
    boots = graded.rate_boots(scores, thresholds, rng=np.random.default_rng(2))
    cp = graded.counts(50, reps=3, rng=np.random.default_rng(2))
    for r in range(3):
        assert boots[r] == pytest.approx((np.repeat(scores, cp[r].astype(int)) > thresholds[r]).mean())
    assert boots[2] == 1.0


def test_selfcal_rate_uses_the_benign_quantile_of_its_own_scores():
    benign = np.arange(1000, dtype=float)            # 5% above 949
    attack = np.array([10.0, 949.0, 950.0, 2000.0])
    assert graded.selfcal_rate(attack, benign, fraction=0.05) == 0.5
    # a shift of everything leaves it unchanged, unlike a fixed threshold
    assert graded.selfcal_rate(attack - 500, benign - 500, fraction=0.05) == 0.5


def test_stratified_mean_interval_keeps_each_stratum_weight():
    vals = np.r_[np.zeros(90), np.ones(10)]
    strata = ["a"] * 90 + ["b"] * 10
    boots = graded.mean_boots(vals, strata=strata, reps=200, rng=np.random.default_rng(0))
    assert np.allclose(boots, 0.5)   # the mean of per-stratum means is 0.5 in every replicate


def test_retrieval_ranks_by_hand():
    cand = torch.eye(4)
    q = torch.tensor([[1.0, 0.1, 0, 0], [0.9, 0.2, 0, 0]])
    assert graded.retrieval_ranks(q, cand, torch.tensor([0, 1])).tolist() == [1, 2]


def test_probe_separates_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, generator=g)
    x = torch.randn(400, 32, generator=g)
    pos, neg = x[x @ w > 0.5], x[x @ w < -0.5]
    probe = graded.fit_probe([pos], [neg])
    assert graded.auc(probe.scores(pos), probe.scores(neg)) > 0.99
    assert torch.nn.functional.cosine_similarity(probe.weight, w.double(), dim=0) > 0.8


# --- sensitivity on the tiny CLIP -----------------------------------------------------------------
def _damaged(tiny_text_eval, kind, size):
    base, ev = tiny_text_eval
    return ev(perturbed(base, kind=kind, size=size, reference_prompts=ev.geometry_prompts))


def test_exact_copy_moves_nothing(tiny_text_eval, text_metrics_of_copy):
    base, ev = tiny_text_eval
    m = text_metrics_of_copy
    for name in ("util_sib", "util_sib_cos", "util_sib_len", "util_text", "fidelity_abs", "util_r1", "util_mrr",
                 "jaccard", "distortion_pearson"):
        assert m[name] == pytest.approx(1.0), name
    assert m["spread_dev"] == pytest.approx(0.0, abs=1e-9)
    assert m["asr_text"] == pytest.approx(m["base_asr_text"])
    for s in ev.attacks:
        sfx = s.replace("-", "_")
        assert m[f"concept_auc_{sfx}"] == pytest.approx(m[f"base_concept_auc_{sfx}"])
        assert m[f"concept_auc_abs_{sfx}"] == pytest.approx(m[f"concept_auc_{sfx}"])


@pytest.mark.parametrize("c", [0.8, 0.5, 0.2])
def test_util_sib_under_contraction_is_exactly_the_factor(tiny_text_eval, c):
    """a = mu + c (b - mu): sibling differences shrink by c and keep their direction."""
    m = _damaged(tiny_text_eval, "contract", c)
    assert m["util_sib_cos"] == pytest.approx(1.0, abs=1e-9)
    assert m["util_sib"] == pytest.approx(c, rel=1e-6)


@pytest.mark.parametrize("theta", [0.2, 0.6, 1.2])
def test_util_sib_under_rotation_is_exactly_the_cosine_of_the_angle(tiny_text_eval, theta):
    """Every plane rotated by theta: <R d, d> = cos(theta) |d|^2 for every difference d."""
    m = _damaged(tiny_text_eval, "rotate", theta)
    assert m["util_sib"] == pytest.approx(math.cos(theta), rel=1e-6)


@pytest.mark.parametrize("kind,sizes", [("noise", [0.25, 0.5, 1.0, 2.0]), ("contract", [0.9, 0.6, 0.3]),
                                        ("rotate", [0.1, 0.4, 0.8])])
def test_default_utility_drops_monotonically_in_the_damage(tiny_text_eval, kind, sizes):
    values = [_damaged(tiny_text_eval, kind, s)["util_sib"] for s in sizes]
    assert all(a > b for a, b in zip([1.0] + values, values)), values


def test_uniform_shift_keeps_structure_but_not_absolute_position(tiny_text_eval, text_metrics_of_copy):
    """Shifting everything along -v: sibling differences are unchanged (util_sib = 1), the absolute
    fidelity falls, and so does the absolute safety view; the relative AUC barely moves."""
    m = _damaged(tiny_text_eval, "shift", 0.5)
    assert m["util_sib"] == pytest.approx(1.0, abs=1e-6)
    assert m["fidelity_abs"] < text_metrics_of_copy["fidelity_abs"] - 0.05
    assert m["asr_text"] <= text_metrics_of_copy["asr_text"]


def test_intervals_bracket_every_objective(text_metrics_of_copy):
    m = text_metrics_of_copy
    for name in ("asr_text", "asr_text_selfcal", "attack_auc", "concept_auc", "concept_auc_abs", "util_sib",
                 "util_mrr", "fidelity_abs"):
        assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"], name
    assert m["concept_auc_hi"] > m["concept_auc_lo"]
