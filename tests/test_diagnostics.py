import pytest
import torch

from sage_core.diagnostics import distance_distortion, geometry_report, knn_jaccard, spread_ratio


def test_identity_scores_perfectly():
    x = torch.randn(20, 4, 8)
    rep = geometry_report(x, x.clone(), k=5)
    assert rep["spread_ratio"] == pytest.approx(1.0)
    assert rep["jaccard"] == pytest.approx(1.0)
    assert rep["distortion_abs"] == pytest.approx(0.0, abs=1e-9)
    assert rep["distortion_spearman"] == pytest.approx(1.0)


def test_collapse_lowers_spread_and_jaccard():
    base = torch.randn(30, 16)
    collapsed = base * 0.05 + torch.ones(16)  # everything pulled towards one direction
    assert spread_ratio(collapsed, base) < 0.2
    shuffled = base[torch.randperm(30)]
    assert knn_jaccard(shuffled, base, k=5) < 0.6


def test_jaccard_hand_value():
    # 4 points on a line in 2-D angle space; k=1 neighbours differ for exactly two points
    base = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    aligned = torch.tensor([[1.0, 0.0], [0.1, 1.0], [0.0, 1.0], [1.0, 0.1]])
    # base nn: 0->1, 1->0, 2->3, 3->2 ; aligned nn: 0->3, 1->2, 2->1, 3->0
    assert knn_jaccard(aligned, base, k=1) == pytest.approx(0.0)
    assert knn_jaccard(base, base, k=1) == pytest.approx(1.0)


def test_distortion_relative_and_correlations():
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    out = distance_distortion(base, base)
    assert out["distortion_rel"] == pytest.approx(0.0)
    assert out["distortion_pearson"] == pytest.approx(1.0)
