"""The one Pareto implementation: non-dominated sorting, crowding distance, hypervolume (numpy).

Every function here works on minimisation vectors ``[n, k]``. :func:`objective_signs` reads each
objective's direction from the metric registry (:mod:`sage_core.defs.metrics`) and :func:`minimised`
turns metric values into ``sign * value`` first, as Optuna does; a missing or NaN value becomes
``+inf``, the worst. Point ``p`` is dominated iff some ``q`` has ``q_j <= p_j`` for every ``j``
and ``q_j < p_j`` for one: equal points do not dominate each other, so duplicates share a rank,
and a crowding distance (nothing can tell them apart, so no order between them may be invented).

The scheduler's rung decisions, the image stage's survivors, ``sage sweep status``, ``sage
pareto`` and the report all rank with these functions (``analysis.pareto`` adds the SQL and
DataFrame side; its two-objective SQL front is tested to agree with :func:`nondominated_ranks`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import moocore
import numpy as np
from numpy.typing import ArrayLike

from sage_core.defs.errors import QueryError
from sage_core.defs.metrics import is_metric, mode, sign

__all__ = ["objective_signs", "minimised", "minimised_rows", "nondominated_ranks", "front_mask", "crowding_distance",
           "ranks_and_crowding", "hypervolume"]


def objective_signs(metrics: Sequence[str], modes: Sequence[str] | None = None) -> np.ndarray:
    """``+1`` per minimised objective, ``-1`` per maximised one, from the metric registry.

    ``modes`` (``"min"``/``"max"``, as specs and Ray Tune write them) may name the direction of a
    metric the registry does not know; for a registered metric it must agree with the registry.
    """
    if modes is None:
        return np.asarray([sign(m) for m in metrics], dtype=float)
    if len(modes) != len(metrics):
        raise QueryError(f"modes {list(modes)}: expected one per objective {list(metrics)}")
    out = []
    for metric, given in zip(metrics, modes, strict=True):
        if given not in ("min", "max"):
            raise QueryError(f"mode {given!r} of objective {metric!r} is not allowed (allowed: min, max)")
        if is_metric(metric) and mode(metric) != given:
            raise QueryError(f"mode {given!r} of objective {metric!r} disagrees with the metric registry "
                             f"({mode(metric)}); leave the mode out or write {mode(metric)!r}")
        out.append(1.0 if given == "min" else -1.0)
    return np.asarray(out, dtype=float)


def minimised(values: Any, signs: ArrayLike) -> np.ndarray:
    """``sign * value`` for a ``[n, k]`` (or ``[k]``) array; ``None``/NaN become ``+inf`` (worst)."""
    # an object array casts None to NaN
    arr = np.asarray(values, dtype=object).astype(float) * np.asarray(signs, dtype=float)
    arr[np.isnan(arr)] = np.inf
    return arr + 0.0  # -0.0 -> 0.0: equal values compare (and deduplicate) as equal


def minimised_rows(rows: Iterable[Mapping[str, Any]], *, metrics: Sequence[str],
                   signs: ArrayLike) -> np.ndarray:
    """The ``[n, k]`` minimisation matrix of result rows (dicts); a missing metric is worst."""
    values = [[r.get(m) for m in metrics] for r in rows]
    return minimised(values, signs) if values else np.zeros((0, len(metrics)))


def _check(points: Any) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise QueryError(f"points: expected an array of shape [n, k], got {pts.shape}")
    if np.isnan(pts).any():
        raise QueryError("points: NaN is not allowed (minimised() turns a missing value into +inf)")
    return pts + 0.0


def nondominated_ranks(points: Any) -> np.ndarray:
    """Front index of every row of the minimisation matrix ``points`` (0 = non-dominated).

    Rows are deduplicated and swept in lexicographic order, where only earlier rows can dominate
    a row. A row's rank is the first front with no member dominating it; fronts are monotone (a
    row dominated by a member of front r is dominated by a member of every front before r), so a
    binary search finds it. Two objectives: front r dominates p iff its least second objective is
    <= p's, O(n log n). More: a dominance test against the front's members.
    """
    return _ranks(points, limit=None)


def front_mask(points: Any) -> np.ndarray:
    """True on the non-dominated rows of ``points`` (duplicates kept): front 0 of
    :func:`nondominated_ranks`, without sorting the rest into fronts."""
    return _ranks(points, limit=1) == 0


def _ranks(points: Any, *, limit: int | None) -> np.ndarray:
    pts = _check(points)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = _unique_rows(pts)
    if uniq.shape[1] == 2 and limit == 1:  # on the front iff below every earlier second objective
        earlier = np.concatenate([[np.inf], np.minimum.accumulate(uniq[:-1, 1])])
        ranks = (uniq[:, 1] >= earlier).astype(np.int64)
    elif uniq.shape[1] == 2:
        ranks = _ranks_2d(uniq)
    else:
        ranks = _ranks_any(uniq, limit=limit)
    return ranks[inverse]


def _unique_rows(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows in lexicographic order and, per input row, the index of its distinct row
    (``np.unique(axis=0)``, several times faster on large inputs)."""
    order = np.lexsort(pts.T[::-1])
    ordered = pts[order]
    new = np.ones(len(pts), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(pts), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def _ranks_2d(uniq: np.ndarray) -> np.ndarray:
    least: list[float] = []  # least second objective of each front so far (non-decreasing)
    ranks = np.empty(len(uniq), dtype=np.int64)
    for i, b in enumerate(uniq[:, 1].tolist()):
        r = bisect.bisect_right(least, b)
        if r == len(least):
            least.append(b)
        else:
            least[r] = b
        ranks[i] = r
    return ranks


def _ranks_any(uniq: np.ndarray, *, limit: int | None = None) -> np.ndarray:
    """Ranks of lexicographically sorted distinct rows; with ``limit``, rows past the first
    ``limit`` fronts get rank ``limit`` (those fronts are then all that is kept)."""
    fronts: list[np.ndarray] = []  # each front's rows, in a buffer that doubles when full
    sizes: list[int] = []
    ranks = np.empty(len(uniq), dtype=np.int64)
    for i, p in enumerate(uniq):
        lo, hi = 0, len(fronts)
        while lo < hi:  # earlier distinct rows <= p everywhere dominate p
            mid = (lo + hi) // 2
            if (fronts[mid][:sizes[mid]] <= p).all(axis=1).any():
                lo = mid + 1
            else:
                hi = mid
        ranks[i] = lo
        if lo == limit:
            continue
        if lo == len(fronts):
            fronts.append(np.empty((8, uniq.shape[1])))
            sizes.append(0)
        if sizes[lo] == len(fronts[lo]):
            fronts[lo] = np.concatenate([fronts[lo], np.empty_like(fronts[lo])])
        fronts[lo][sizes[lo]] = p
        sizes[lo] += 1
    return ranks


def crowding_distance(points: Any) -> np.ndarray:
    """NSGA-II crowding distance of each row within one front.

    For each objective, sort the front; the two ends get ``inf``; an inner point gets
    ``(x_next - x_prev) / (x_max - x_min)``; the distance is the sum over objectives (an
    objective with no finite positive span adds nothing). Fronts of one or two rows: all ``inf``.
    Equal rows are one point: the distance is computed over the distinct rows and each copy gets
    its point's (a stable sort would otherwise rank twins by their row order, e.g. arrival order at
    a scheduler's rung, when their reports are identical).
    """
    pts = _check(points)
    if len(pts) < 2:
        return _crowding_distinct(pts)
    uniq, inverse = _unique_rows(pts)
    first = np.full(len(uniq), len(pts))
    np.minimum.at(first, inverse, np.arange(len(pts)))
    order = np.argsort(first)  # distinct rows in order of first appearance: ties in one objective
    rank = np.empty_like(order)  # break as they did before copies were merged
    rank[order] = np.arange(len(order))
    return _crowding_distinct(uniq[order])[rank[inverse]]


def _crowding_distinct(pts: np.ndarray) -> np.ndarray:
    n, k = pts.shape
    if n <= 2:
        return np.full(n, math.inf)
    dist = np.zeros(n)
    for j in range(k):
        order = np.argsort(pts[:, j], kind="stable")
        col = pts[order, j]
        dist[order[0]] = dist[order[-1]] = math.inf
        with np.errstate(invalid="ignore"):
            span = col[-1] - col[0]
        if not math.isfinite(span) or span <= 0:
            continue
        dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def ranks_and_crowding(points: Any) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II's order keys: each row's front (0 first) and its crowding distance within that
    front (larger first)."""
    pts = _check(points)
    ranks = nondominated_ranks(pts)
    crowd = np.zeros(len(pts))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        crowd[idx] = crowding_distance(pts[idx])
    return ranks, crowd


def hypervolume(points: Any, ref: Sequence[float]) -> float:
    """Volume dominated by the minimisation rows ``points`` and bounded by ``ref`` (``moocore``).

    Rows not strictly better than ``ref`` in every objective add nothing; no rows: 0.
    """
    pts = _check(points)
    r = np.asarray(ref, dtype=float)
    if r.shape != (pts.shape[1],) or np.isnan(r).any():
        raise QueryError(f"ref: expected {pts.shape[1]} numbers, got {list(np.atleast_1d(ref))}")
    pts = pts[np.all(pts < r, axis=1)]
    if len(pts) == 0:
        return 0.0

    return float(moocore.hypervolume(pts, ref=r))
