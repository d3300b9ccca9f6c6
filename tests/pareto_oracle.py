"""Brute-force Pareto references for the tests: O(n^2) loops over the definitions, written
independently of :mod:`analysis.dominance` (no sorting tricks, no shared helpers)."""

from __future__ import annotations

import itertools
import math

import numpy as np


def minimise(vals, signs) -> np.ndarray:
    """``sign * value`` with NaN as +inf (the worst), row by row."""
    out = []
    for row in np.asarray(vals, dtype=float):
        out.append([math.inf if math.isnan(v) else v * s for v, s in zip(row, signs)])
    return np.asarray(out, dtype=float).reshape(len(out), len(signs))


def brute_front(vals: np.ndarray, signs) -> np.ndarray:
    """O(n^2) definition: dominated iff another point is <= everywhere and < somewhere (minimised)."""
    a = np.asarray(vals, float) * np.asarray(signs, float)
    n = len(a)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and np.all(a[j] <= a[i]) and np.any(a[j] < a[i]):
                keep[i] = False
                break
    return keep


def brute_ranks(vals: np.ndarray, signs) -> np.ndarray:
    """1 for the front, 2 for the front of the rest, ... (peeling with :func:`brute_front`)."""
    vals = np.asarray(vals, float)
    ranks = np.zeros(len(vals), dtype=int)
    left = np.arange(len(vals))
    r = 1
    while len(left):
        mask = brute_front(vals[left], signs)
        ranks[left[mask]] = r
        left = left[~mask]
        r += 1
    return ranks


def brute_crowding(front: np.ndarray) -> list[float]:
    """NSGA-II crowding distance within one front (minimised rows), by plain loops: per objective,
    the rows in stable value order; the ends get inf, an inner row (next - prev) / (max - min)
    when that span is finite and positive. Fronts of one or two rows: all inf. Equal rows are one
    point: the loops run over the distinct rows and every copy gets its point's distance."""
    distinct: list[tuple] = []
    for row in front:
        if tuple(row) not in distinct:
            distinct.append(tuple(row))
    if len(distinct) < len(front):
        dist_of = dict(zip(distinct, brute_crowding(np.asarray(distinct, dtype=float))))
        return [dist_of[tuple(row)] for row in front]
    n = len(front)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for j in range(front.shape[1]):
        order = sorted(range(n), key=lambda i: front[i][j])
        lo, hi = front[order[0]][j], front[order[-1]][j]
        dist[order[0]] = dist[order[-1]] = math.inf
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 0:
            continue
        for p in range(1, n - 1):
            dist[order[p]] += (front[order[p + 1]][j] - front[order[p - 1]][j]) / (hi - lo)
    return dist


def brute_rank_crowding(points: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """0-based front and crowding within the front, for minimised rows."""
    ranks = brute_ranks(points, [1] * points.shape[1]) - 1
    crowd = [0.0] * len(points)
    for r in set(ranks.tolist()):
        idx = [i for i in range(len(points)) if ranks[i] == r]
        for i, c in zip(idx, brute_crowding(points[idx])):
            crowd[i] = c
    return ranks, crowd


def brute_hv(a: np.ndarray, ref: np.ndarray) -> float:
    """Union volume of the boxes [a_i, ref] by summing grid cells (minimisation form)."""
    a = a[np.all(a < ref, axis=1)]
    if len(a) == 0:
        return 0.0
    axes = [np.unique(np.concatenate([a[:, d], [ref[d]]])) for d in range(a.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(ax) - 1) for ax in axes]):
        lo = np.array([axes[d][c] for d, c in enumerate(cell)])
        hi = np.array([axes[d][c + 1] for d, c in enumerate(cell)])
        if np.any(np.all(a <= lo, axis=1)):
            total += float(np.prod(hi - lo))
    return total
