"""Geometry diagnostics against independent numpy/scipy computations on seeded random embeddings."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from sage_core.diagnostics import distance_distortion, geometry_report, knn_jaccard, spread_ratio


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _unit_rows(x: torch.Tensor) -> np.ndarray:
    a = x.reshape(x.shape[0], -1).numpy()
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _spread(x: torch.Tensor) -> float:
    """Trace of the unbiased covariance of the unit vectors (numpy's own estimator)."""
    return float(np.trace(np.atleast_2d(np.cov(_unit_rows(x), rowvar=False))))


def _neighbours(x: torch.Tensor, k: int) -> list[set[int]]:
    """Brute force: for each row, the k other rows of highest cosine."""
    cos = _unit_rows(x) @ _unit_rows(x).T
    return [set(sorted((j for j in range(len(cos)) if j != i), key=lambda j: -cos[i, j])[:k])
            for i in range(len(cos))]


def _jaccard(aligned: torch.Tensor, base: torch.Tensor, k: int) -> float:
    return float(np.mean([len(a & b) / len(a | b) for a, b in zip(_neighbours(aligned, k), _neighbours(base, k))]))


def _pair_distances(x: torch.Tensor) -> np.ndarray:
    cos = _unit_rows(x) @ _unit_rows(x).T
    n = len(cos)
    return np.array([1 - cos[i, j] for i in range(n) for j in range(i + 1, n)])


def test_identity_scores_perfectly():
    x = _randn(20, 4, 8, seed=0)
    rep = geometry_report(x, x.clone(), k=5)
    assert rep["spread_ratio"] == pytest.approx(1.0)
    assert rep["jaccard"] == pytest.approx(1.0) and rep["jaccard_10"] == pytest.approx(1.0)
    assert rep["distortion_abs"] == pytest.approx(0.0, abs=1e-12)
    assert rep["distortion_spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_metrics_match_independent_computations(seed):
    base = _randn(30, 16, seed=seed)
    aligned = base + 0.7 * _randn(30, 16, seed=100 + seed)  # a noisy copy: every metric strictly between
    assert spread_ratio(aligned, base) == pytest.approx(_spread(aligned) / _spread(base), rel=1e-9)
    for k in (1, 5, 10):
        assert knn_jaccard(aligned, base, k=k) == pytest.approx(_jaccard(aligned, base, k), rel=1e-12)
    d, d0 = _pair_distances(aligned), _pair_distances(base)
    out = distance_distortion(aligned, base)
    assert out["distortion_abs"] == pytest.approx(np.mean(np.abs(d - d0)), rel=1e-9)
    assert out["distortion_rel"] == pytest.approx(np.mean(np.abs(d - d0) / d0), rel=1e-9)
    assert out["distortion_pearson"] == pytest.approx(pearsonr(d, d0)[0], rel=1e-9)
    assert out["distortion_spearman"] == pytest.approx(spearmanr(d, d0)[0], rel=1e-9)


def test_collapse_lowers_spread_and_a_shuffle_loses_neighbours():
    base = _randn(30, 16, seed=4)
    collapsed = base * 0.05 + torch.ones(16, dtype=torch.float64)  # everything pulled towards one direction
    ratio = spread_ratio(collapsed, base)
    assert ratio == pytest.approx(_spread(collapsed) / _spread(base), rel=1e-9) and ratio < 0.2
    shuffled = base[torch.randperm(30, generator=torch.Generator().manual_seed(5))]
    j = knn_jaccard(shuffled, base, k=5)
    assert j == pytest.approx(_jaccard(shuffled, base, 5), rel=1e-12) and j < 0.6


def test_jaccard_hand_value():
    # 4 points on a line in 2-D angle space; k=1 neighbours differ for exactly two points
    base = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    aligned = torch.tensor([[1.0, 0.0], [0.1, 1.0], [0.0, 1.0], [1.0, 0.1]])
    # base nn: 0->1, 1->0, 2->3, 3->2 ; aligned nn: 0->3, 1->2, 2->1, 3->0
    assert knn_jaccard(aligned, base, k=1) == pytest.approx(0.0)
    assert knn_jaccard(base, base, k=1) == pytest.approx(1.0)


def test_spearman_averages_tied_ranks():
    # distances with ties: two pairs tie in the aligned encoder; scipy averages tied ranks too
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    aligned = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.6, 0.8]])
    d, d0 = _pair_distances(aligned), _pair_distances(base)
    assert len(set(np.round(d, 12))) < len(d)  # the case has ties
    assert distance_distortion(aligned, base)["distortion_spearman"] == pytest.approx(spearmanr(d, d0)[0],
                                                                                         rel=1e-9)


def test_distortion_relative_and_correlations():
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    out = distance_distortion(base, base)
    assert out["distortion_rel"] == pytest.approx(0.0)
    assert out["distortion_pearson"] == pytest.approx(1.0)
