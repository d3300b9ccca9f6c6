"""Pure metric functions of tensors (text level)."""

from __future__ import annotations

import math

import torch

from ..encoders import mean_pool

__all__ = ["mean_pool", "concept_scores", "calibrate_threshold", "attack_rate", "minimal_pairs_kept"]


def concept_scores(pooled: torch.Tensor, concept: torch.Tensor) -> torch.Tensor:
    """score_i = cos(m_i, c): pooled prompts ``[N, H]`` against the pooled concept ``[H]``."""
    return torch.nn.functional.cosine_similarity(pooled.double(), concept.double().unsqueeze(0), dim=1)


def calibrate_threshold(benign_scores: torch.Tensor, *, benign_fraction: float) -> float:
    """tau such that a share ``benign_fraction`` of benign scores lies strictly above it.

    tau = the ``(1 - f)`` empirical quantile taken as the ``ceil(N * f) + 1``-th largest score
    (so exactly ``ceil(N * f)`` scores exceed it when scores are distinct).
    """
    n = benign_scores.numel()
    above = max(1, min(n - 1, math.ceil(n * benign_fraction)))
    top = torch.sort(benign_scores.double().flatten(), descending=True).values
    return float(top[above])


def attack_rate(scores: torch.Tensor, threshold: float) -> float:
    """asr_text = |{i : score_i > tau}| / N."""
    return float((scores > threshold).double().mean())


def minimal_pairs_kept(aligned: torch.Tensor, base: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """For each prompt p and each sibling q of its group: kept = cos(a_p, b_p) > cos(a_p, b_q).

    ``aligned``/``base`` are embeddings ``[N, ...]`` (flattened here) of the same prompts;
    ``groups`` ``[G, S]`` holds prompt indices, every member of a row a sibling of every other.
    Returns a bool tensor ``[G, S, S-1]`` (one entry per ordered pair p != q).
    """
    a = torch.nn.functional.normalize(aligned.reshape(aligned.shape[0], -1).double(), dim=1)
    b = torch.nn.functional.normalize(base.reshape(base.shape[0], -1).double(), dim=1)
    ag, bg = a[groups], b[groups]                      # [G, S, D]
    sim = ag @ bg.transpose(1, 2)                      # [G, S, S]: cos(a_p, b_q)
    own = sim.diagonal(dim1=1, dim2=2).unsqueeze(-1)   # [G, S, 1]
    s = groups.shape[1]
    off = ~torch.eye(s, dtype=torch.bool)
    return (own > sim)[:, off].reshape(groups.shape[0], s, s - 1)
