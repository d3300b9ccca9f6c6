"""Per-prompt scores of one text evaluation: what a paired comparison of two trials resamples.

Every trial of a sweep is evaluated on the same prompts, so the difference between two trials has
a far tighter interval when both are resampled with the *same* prompt indices (a paired bootstrap)
than their two marginal intervals suggest. That needs each trial's scores per prompt, which the
metric row (one number per objective) does not keep. :class:`PromptScores` collects them during
one evaluation; the sweep writes them beside its results (``analysis.prompt_scores``), and
``sage pareto`` reads them back.

Every graded objective recorded here is a mean over *parts* (attack sets, TIFA categories) of
either

- an AUC between two sides of scores (:meth:`PromptScores.auc`, a U-statistic:
  P(pos > neg) + P(tie) / 2 over all pairs), or
- a mean of per-unit values (:meth:`PromptScores.mean`, e.g. one value per minimal-pair group).

Each score belongs to a *pool* (the prompts that are resampled together) at an *index* in it: the
same pool and index mean the same prompt in every trial of a sweep, so a paired replicate draws one
set of indices per pool and applies it to both trials. Two sides drawn from one pool (an attack
prompt and its matched control at the same index) are resampled as pairs. A pool's fingerprint
(SHA-256 of its items) lets the reader refuse trials that were evaluated on different prompts.

Columns (:meth:`PromptScores.columns`): ``metric`` (str), ``part`` (str), ``side`` (``pos``,
``neg`` or ``value``), ``pool`` (str), ``index`` (int), ``score`` (float64). Pools
(:attr:`PromptScores.pools`): name -> ``{"n": items, "fingerprint": "sha256:<hex>"}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PromptScores", "fingerprint"]


def fingerprint(items: Sequence[str]) -> str:
    """``sha256:<hex>`` of the items, in order (one item per line)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


class PromptScores:
    """The per-prompt scores of one evaluation (module docstring)."""

    def __init__(self) -> None:
        self.pools: dict[str, dict[str, Any]] = {}
        self._parts: list[tuple[str, str, str, str, np.ndarray]] = []  # metric, part, side, pool, scores

    def _pool(self, name: str, items: Sequence[str], n: int) -> None:
        if len(items) != n:
            raise ValueError(f"pool {name!r}: {n} scores for {len(items)} items")
        entry = {"n": len(items), "fingerprint": fingerprint(items)}
        if self.pools.setdefault(name, entry) != entry:
            raise ValueError(f"pool {name!r} was recorded with other items; name each set of prompts once")

    def auc(self, metric: str, part: str, pos, neg, *, pos_pool: tuple[str, Sequence[str]],
            neg_pool: tuple[str, Sequence[str]]) -> None:
        """One part of an AUC objective: ``pos[i]`` is the score of item ``i`` of ``pos_pool``
        (``(name, items)``), ``neg[j]`` that of item ``j`` of ``neg_pool``."""
        for side, scores, (pool, items) in (("pos", pos, pos_pool), ("neg", neg, neg_pool)):
            values = np.asarray(scores, dtype=np.float64).ravel()
            self._pool(pool, items, len(values))
            self._parts.append((metric, part, side, pool, values))

    def mean(self, metric: str, values, *, strata: Sequence[str] | np.ndarray, items: Sequence[str],
             pool: str) -> None:
        """A mean-of-parts objective: ``values[i]`` belongs to part ``strata[i]`` and is unit
        ``items[i]``; the units of each part form the pool ``<pool>:<part>`` (resampled within their
        part, as the evaluator's own bootstrap does)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        labels = np.asarray(strata)
        for part in dict.fromkeys(labels.tolist()):
            where = np.flatnonzero(labels == part)
            name = f"{pool}:{part}"
            self._pool(name, [items[i] for i in where.tolist()], len(where))
            self._parts.append((metric, str(part), "value", name, v[where]))

    def columns(self) -> dict[str, np.ndarray]:
        """The recorded scores as equal-length columns (module docstring)."""
        parts, sizes = self._parts, [len(p[4]) for p in self._parts]

        def text(i: int) -> np.ndarray:
            return np.repeat(np.asarray([p[i] for p in parts], dtype=object), sizes)

        return {"metric": text(0), "part": text(1), "side": text(2), "pool": text(3),
                "index": np.concatenate([np.arange(n, dtype=np.int64) for n in sizes] or [np.zeros(0, np.int64)]),
                "score": np.concatenate([p[4] for p in parts] or [np.zeros(0)])}
