"""Paired comparisons of trials: does one dominate the other beyond the noise of the prompt sample?

Every trial of a sweep is scored on the same prompts, so prompt difficulty is shared: resampling
the *same* prompt indices in both trials (a paired bootstrap) cancels it, and the interval of a
difference is far tighter than the two marginal ``[lo, hi]`` intervals suggest. The scores per
prompt come from :mod:`analysis.prompt_scores`; each objective is recomputed from them (a mean
over parts of AUC(pos, neg) or of a mean), so the machinery serves any graded AUC-style or
mean-style objective the evaluator records, whatever its name.

One replicate draws multinomial counts over the items of every pool (seeded, pools in name order)
and weighs each score by its item's count, in both trials and in every objective at once: the
replicate of a weighted AUC is ``sum_i w_i sum_j w_j H(s_i - s_j) / (sum w_i * sum w_j)`` with
``H`` = 1 above, 1/2 at a tie (a U-statistic over the resampled prompts, computed by sorting).

For a pair (A, B) and every replicate, ``d_k = sign_k * (A_k - B_k)`` (every objective minimised,
directions from :mod:`sage_core.defs.metrics`). A dominates B with 95% confidence when A is at least as
good in every objective and better in one in >= 95% of the replicates; two front members trade off
with 95% confidence when >= 95% of the replicates keep the strict order of their point estimates
in every objective where those differ. Otherwise the pair is *not separable*: another draw of
prompts could reorder it.

The pairs that decide a front (:func:`deciding_pairs`): each front member against its nearest
dominated neighbour (the closest trial it dominates, objectives scaled by their range), and
adjacent front members (sorted by the first objective).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.dominance import minimised, objective_signs
from analysis.prompt_scores import ScoreTable, read_prompt_scores

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["draw_counts", "replicates", "objective_value", "percentile_interval", "compare", "mean_difference",
           "deciding_pairs", "FrontComparison", "front_comparisons", "CONFIDENCE", "RESAMPLES"]

CONFIDENCE = 0.95
RESAMPLES = 2000


def draw_counts(pools: Mapping[str, Mapping[str, Any]], *, reps: int = RESAMPLES,
                seed: int = 0) -> dict[str, np.ndarray]:
    """``{pool: [reps, n] multinomial counts}``: one paired resampling of every pool's items."""
    rng = np.random.default_rng(seed)
    sizes = {name: int(pools[name]["n"]) for name in sorted(pools)}
    return {name: rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(float) for name, n in sizes.items()}


def _parts(table: ScoreTable, metric: str) -> dict[str, dict[str, tuple[str, np.ndarray, np.ndarray]]]:
    """``{part: {side: (pool, index, score)}}`` of ``metric`` in ``table``."""
    c = table.columns
    out: dict[str, dict[str, tuple[str, np.ndarray, np.ndarray]]] = {}
    rows = np.flatnonzero(c["metric"] == metric)
    for part in dict.fromkeys(c["part"][rows].tolist()):
        mine = rows[c["part"][rows] == part]
        for side in dict.fromkeys(c["side"][mine].tolist()):
            sel = mine[c["side"][mine] == side]
            pools = set(c["pool"][sel].tolist())
            if len(pools) != 1:
                raise ValueError(f"{metric} part {part!r} side {side!r} spans pools {sorted(pools)}")
            out.setdefault(part, {})[side] = (pools.pop(), c["index"][sel], c["score"][sel])
    return out


def _weighted_auc(pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
    """Weighted AUC per replicate (``w_*``: ``[reps, n]``), by sorting the negatives once."""
    order = np.argsort(neg, kind="stable")
    cum = np.concatenate([np.zeros((len(w_neg), 1)), np.cumsum(w_neg[:, order], axis=1)], axis=1)
    lt, le = np.searchsorted(neg[order], pos, "left"), np.searchsorted(neg[order], pos, "right")
    below = cum[:, lt] + 0.5 * (cum[:, le] - cum[:, lt])
    return (w_pos * below).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def replicates(table: ScoreTable, metric: str, counts: Mapping[str, np.ndarray]) -> np.ndarray:
    """``metric`` of ``table`` under every replicate of ``counts`` (:func:`draw_counts`)."""
    parts = _parts(table, metric)
    if not parts:
        raise KeyError(metric)
    values = []
    for part, sides in parts.items():
        if "value" in sides:
            pool, idx, score = sides["value"]
            w = counts[pool][:, idx]
            values.append((w * score).sum(axis=1) / w.sum(axis=1))
        elif {"pos", "neg"} <= set(sides):
            (pp, ip, sp), (pn, i_n, sn) = sides["pos"], sides["neg"]
            values.append(_weighted_auc(sp, sn, counts[pp][:, ip], counts[pn][:, i_n]))
        else:
            raise ValueError(f"{metric} part {part!r}: needs pos and neg scores, or values")
    return np.mean(values, axis=0)


def objective_value(table: ScoreTable, metric: str) -> float:
    """``metric`` recomputed from the scores (every item once): what the result row holds."""
    return float(replicates(table, metric, {k: np.ones((1, int(v["n"]))) for k, v in table.pools.items()})[0])


def _shared_pools(tables: Sequence[ScoreTable], objectives: Sequence[str]) -> dict[str, Mapping[str, Any]] | None:
    """The pools the objectives use, when every table has the objectives on the very same pools."""
    used: dict[str, Mapping[str, Any]] = {}
    for t in tables:
        if any(m not in t.metrics() for m in objectives):
            return None
        for pool in set(t.columns["pool"][np.isin(t.columns["metric"], list(objectives))].tolist()):
            if used.setdefault(pool, t.pools[pool]) != t.pools[pool]:
                return None
    return used


def percentile_interval(values: np.ndarray, *, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The central ``confidence`` percentile interval of bootstrap replicates (axis 0)."""
    lo, hi = np.percentile(values, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2], axis=0)
    return lo, hi


def mean_difference(a: Sequence[ScoreTable], b: Sequence[ScoreTable], objectives: Sequence[str], *,
                    reps: int = RESAMPLES, seed: int = 0,
                    confidence: float = CONFIDENCE) -> dict[str, tuple[float, float, float]] | None:
    """``{m: (mean(A) - mean(B), lo, hi)}``: the paired difference of two groups of trials (seeds of
    one configuration), each objective of every trial recomputed under the same replicates
    (:func:`draw_counts` over the pools the objectives use, ``seed``) and averaged within its group
    replicate by replicate. Only objectives every table holds; None when the tables were not scored
    on the same prompts (or hold none of ``objectives``)."""
    tables = [*a, *b]
    held = [m for m in objectives if all(m in t.metrics() for t in tables)]
    pools = _shared_pools(tables, held) if held and a and b else None
    if pools is None:
        return None
    counts = draw_counts(pools, reps=reps, seed=seed)
    out = {}
    for m in held:
        d = (np.mean([replicates(t, m, counts) for t in a], axis=0)
             - np.mean([replicates(t, m, counts) for t in b], axis=0))
        lo, hi = percentile_interval(d, confidence=confidence)
        point = np.mean([objective_value(t, m) for t in a]) - np.mean([objective_value(t, m) for t in b])
        out[m] = (float(point), float(lo), float(hi))
    return out


def compare(a: ScoreTable, b: ScoreTable, objectives: Sequence[str], *, counts: Mapping[str, np.ndarray],
            confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Paired replicates of A - B per objective and the verdict (module docstring). Returns
    ``{"diff": {m: (A - B, lo, hi)}, "p_a": P(A dominates), "p_b": ..., "p_order": ..., "verdict"}``."""
    signs = objective_signs(list(objectives))
    ra = np.stack([replicates(a, m, counts) for m in objectives], axis=1)
    rb = np.stack([replicates(b, m, counts) for m in objectives], axis=1)
    point = np.asarray([objective_value(a, m) - objective_value(b, m) for m in objectives]) * signs
    d = (ra - rb) * signs
    p_a = float(np.mean((d <= 0).all(axis=1) & (d < 0).any(axis=1)))
    p_b = float(np.mean((d >= 0).all(axis=1) & (d > 0).any(axis=1)))
    strict = point != 0
    p_order = float(np.mean((np.sign(d[:, strict]) == np.sign(point[strict])).all(axis=1))) if strict.any() else 0.0
    if p_a >= confidence:
        verdict = "A dominates"
    elif p_b >= confidence:
        verdict = "B dominates"
    elif (point < 0).any() and (point > 0).any() and p_order >= confidence:
        verdict = "trade-off"
    else:
        verdict = "not separable"
    lo, hi = percentile_interval(ra - rb, confidence=confidence)
    diff = {m: (float(point[k] * signs[k]), float(lo[k]), float(hi[k])) for k, m in enumerate(objectives)}
    return {"diff": diff, "p_a": p_a, "p_b": p_b, "p_order": p_order, "verdict": verdict}


def deciding_pairs(points: np.ndarray, front: np.ndarray) -> list[tuple[int, int, str]]:
    """``(i, j, kind)`` row pairs that decide the front of minimised ``points`` (``front``: mask):
    adjacent front members (``"adjacent"``, sorted by the first objective, then the others) and
    each member with its nearest dominated neighbour (``"neighbour"``)."""
    pts = np.asarray(points, dtype=float)
    members = [int(i) for i in np.lexsort(pts[front].T[::-1])]
    members = [int(np.flatnonzero(front)[i]) for i in members]
    pairs = [(members[k], members[k + 1], "adjacent") for k in range(len(members) - 1)]
    scale = np.ptp(pts, axis=0) if len(pts) else np.ones(pts.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    for i in members:
        dominated = np.flatnonzero(~front & (pts >= pts[i]).all(axis=1) & (pts > pts[i]).any(axis=1))
        if len(dominated):
            dist = np.linalg.norm((pts[dominated] - pts[i]) / scale, axis=1)
            pairs.append((i, int(dominated[np.argmin(dist)]), "neighbour"))
    return pairs


@dataclass(frozen=True)
class FrontComparison:
    """``pairs``: one row per deciding pair; ``separable``: per front row of ``ranked`` (its index),
    ``yes``, ``no`` (some pair is not separable) or None (no per-prompt scores to tell)."""

    pairs: pd.DataFrame
    separable: dict[Any, str | None]


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['trial_id']}@{int(row['step'])}"


def front_comparisons(ranked: pd.DataFrame, objectives: Sequence[str], *, scores_root: str | None,
                      group: str | None = None, reps: int = RESAMPLES, seed: int = 0,
                      confidence: float = CONFIDENCE) -> FrontComparison:
    """The deciding pairs of each front in ``ranked`` (:func:`analysis.pareto.pareto_ranks`, with
    ``front``), compared by a paired bootstrap over the prompts of :mod:`analysis.prompt_scores`."""
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

    tables: dict[Any, ScoreTable | None] = {}

    def table(i: Any) -> ScoreTable | None:
        if i not in tables:
            row = ranked.loc[i]
            tables[i] = None if scores_root is None else read_prompt_scores(
                scores_root, sweep_id=str(row["sweep_id"]), trial_id=str(row["trial_id"]), step=int(row["step"]))
        return tables[i]

    rows = []
    separable: dict[Any, str | None] = {i: None for i in ranked.index[ranked["front"] == 1]}
    keys: list[Any] = [None] if group is None else list(dict.fromkeys(ranked[group].tolist()))
    for key in keys:
        sub = ranked if group is None else ranked[ranked[group].eq(key) | (ranked[group].isna() & pd.isna(key))]
        pts = minimised(sub[list(objectives)].to_numpy(dtype=float), objective_signs(list(objectives)))
        for i, j, kind in deciding_pairs(pts, (sub["front"] == 1).to_numpy()):
            a, b = sub.index[i], sub.index[j]
            ta, tb = table(a), table(b)
            pools = _shared_pools([ta, tb], objectives) if ta is not None and tb is not None else None
            entry = {"A": _label(ranked.loc[a]), "B": _label(ranked.loc[b]), "pair": kind}
            if ta is None or tb is None or pools is None:
                entry["verdict"] = "no prompt scores"
            else:
                got = compare(ta, tb, objectives, counts=draw_counts(pools, reps=reps, seed=seed),
                              confidence=confidence)
                for m, (dv, lo, hi) in got["diff"].items():
                    entry.update({f"{m} A-B": dv, f"{m} A-B_lo": lo, f"{m} A-B_hi": hi})
                entry.update({"P(A dom)": got["p_a"], "P(B dom)": got["p_b"], "verdict": got["verdict"]})
                for k in (a, b):
                    if k in separable:
                        ok = got["verdict"] != "not separable"
                        separable[k] = "yes" if ok and separable[k] != "no" else "no"
            rows.append(entry)
    return FrontComparison(pairs=pd.DataFrame(rows), separable=separable)
