"""Geometry diagnostics of an aligned encoder against its base (paper Sec. 3-4, App. B).

All functions take embeddings of the SAME prompts from both encoders, ``[N, L, H]`` or
``[N, D]`` (flattened internally), and are pure functions of tensors.
"""

from __future__ import annotations

import torch

from .losses import spread

__all__ = ["spread_ratio", "knn_jaccard", "distance_distortion", "geometry_report"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def _cos_matrix(x: torch.Tensor) -> torch.Tensor:
    z = torch.nn.functional.normalize(_flat(x), dim=1)
    return z @ z.T


def spread_ratio(aligned: torch.Tensor, base: torch.Tensor) -> float:
    """R_s = spread(aligned) / spread(base), spread = trace of the covariance of unit vectors.

    1 means the aligned encoder spreads benign prompts as the base does; SAGE reports 0.96.
    """
    return float(spread(_flat(aligned)) / spread(_flat(base)))


def _knn_sets(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean [N, N] mask of the k most similar OTHER prompts of each row."""
    n = sim.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k={k}: needs 1 <= k < number of prompts ({n})")
    sim = sim.clone()
    sim.fill_diagonal_(float("-inf"))
    idx = sim.topk(k, dim=1).indices
    mask = torch.zeros_like(sim, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask


def knn_jaccard(aligned: torch.Tensor, base: torch.Tensor, k: int = 15) -> float:
    """J@K = mean_i |N0(i) & N(i)| / |N0(i) | N(i)|, N = the K nearest other prompts by cosine.

    1 means every prompt keeps its neighbourhood; SAGE reports 0.63.
    """
    a = _knn_sets(_cos_matrix(aligned), k)
    b = _knn_sets(_cos_matrix(base), k)
    inter = (a & b).sum(dim=1).double()
    union = (a | b).sum(dim=1).double()
    return float((inter / union).mean())


def _rankdata(x: torch.Tensor) -> torch.Tensor:
    # Average ranks for ties, so Spearman is Pearson of ranks as usual.
    order = x.argsort()
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    uniq, inv, counts = torch.unique(x, return_inverse=True, return_counts=True)
    if len(uniq) < len(x):
        sums = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inv, ranks)
        ranks = (sums / counts.to(x.dtype))[inv]
    return ranks


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = x.norm() * y.norm()
    return float((x @ y) / denom) if denom > 0 else float("nan")


def distance_distortion(aligned: torch.Tensor, base: torch.Tensor) -> dict[str, float]:
    """Pairwise cosine-distance distortion over all pairs i < j, d = 1 - cos.

    Returns ``distortion_abs`` = mean |d - d0|, ``distortion_rel`` = mean |d - d0| / d0 (pairs with
    d0 > 0), and the ``distortion_pearson`` / ``distortion_spearman`` correlations of d with d0.
    """
    n = aligned.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    d = (1 - _cos_matrix(aligned))[iu[0], iu[1]]
    d0 = (1 - _cos_matrix(base))[iu[0], iu[1]]
    diff = (d - d0).abs()
    pos = d0 > 1e-12
    return {
        "distortion_abs": float(diff.mean()),
        "distortion_rel": float((diff[pos] / d0[pos]).mean()) if pos.any() else float("nan"),
        "distortion_pearson": _pearson(d, d0),
        "distortion_spearman": _pearson(_rankdata(d), _rankdata(d0)),
    }


def geometry_report(aligned: torch.Tensor, base: torch.Tensor, *, k: int = 15,
                    extra_k: tuple[int, ...] = (10,)) -> dict[str, float]:
    """All diagnostics in one flat dict: ``spread_ratio``, ``jaccard`` (at ``k``), ``jaccard_<k>``
    for each extra K, and the distortion metrics."""
    out = {"spread_ratio": spread_ratio(aligned, base), "jaccard": knn_jaccard(aligned, base, k)}
    for kk in extra_k:
        if kk != k and kk < aligned.shape[0]:
            out[f"jaccard_{kk}"] = knn_jaccard(aligned, base, kk)
    out.update(distance_distortion(aligned, base))
    return out
