"""The concept-probe AUC of any encoder with paired bootstrap replicates.

``concept_auc`` (:mod:`.text`) is P(probe score of an attack prompt > that of a benign prompt).
The robustness stage compares one encoder before and after a benign fine-tune, and the SaDi-style
index combines that AUC with the proximal disruption; both need its bootstrap replicates, and a
difference needs the *same* resampled prompts for both encoders (a paired bootstrap: the prompts'
own spread cancels, so the interval of a difference is honest and narrow).

:class:`PairedAUC` draws the resampling counts once (seeded by ``bootstrap_seed``) for the
evaluator's attack sets and benign geometry sample, then scores any encoder with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..encoders import TextEncoder
from . import graded

__all__ = ["ProbeScores", "probe_scores", "benign_scores", "PairedAUC"]


@dataclass(frozen=True)
class ProbeScores:
    """Concept-probe scores of an evaluator's prompts under one encoder."""

    attack: dict[str, np.ndarray]  # per attack set
    benign: np.ndarray             # the evaluator's benign geometry sample


def probe_scores(ev, encoder: TextEncoder) -> ProbeScores:
    """Probe scores of ``ev``'s attack prompts and benign geometry prompts (a
    :class:`~sage_core.evaluation.TextEvaluator`) under ``encoder``, mean-pooled over real tokens
    as the evaluator pools them."""
    bs = ev.cfg.batch_size
    attack = {name: ev.probe.scores(encoder.embed_pooled(prompts, batch_size=bs)).numpy()
              for name, prompts in ev.attacks.items()}
    return ProbeScores(attack=attack, benign=benign_scores(ev, encoder))


def benign_scores(ev, encoder: TextEncoder) -> np.ndarray:
    """Probe scores of ``ev``'s benign geometry prompts alone under ``encoder`` (the base's: the
    absolute view's negatives)."""
    return ev.probe.scores(encoder.embed_pooled(ev.geometry_prompts, batch_size=ev.cfg.batch_size)).numpy()


class PairedAUC:
    """Mean over attack sets of AUC(attack, benign), with replicates from resamplings fixed once:
    the benign counts are drawn at construction, and each attack set's resampling comes from a
    generator re-seeded identically on every call, so every encoder sees the same replicates."""

    def __init__(self, ev, *, reps: int | None = None, seed: int | None = None):
        self.reps = max(ev.cfg.bootstrap_samples if reps is None else reps, 1)
        self.seed = ev.cfg.bootstrap_seed if seed is None else seed
        self.benign_counts = graded.counts(len(ev.geometry_prompts), reps=self.reps,
                                           rng=np.random.default_rng([self.seed, 0]))
        self._ev = ev
        self._base_benign: np.ndarray | None = None

    @property
    def base_benign(self) -> np.ndarray:
        """The base encoder's benign probe scores (the absolute view's negatives), computed once."""
        if self._base_benign is None:
            self._base_benign = benign_scores(self._ev, self._ev.base)
        return self._base_benign

    def auc(self, scores: ProbeScores, *, benign: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """``(value, replicates)`` of the mean over sets of AUC(attack scores, benign scores);
        ``benign`` replaces ``scores.benign`` (the absolute view compares with the base's)."""
        neg = scores.benign if benign is None else benign
        values, boots = [], []
        for i, pos in enumerate(scores.attack.values()):
            values.append(graded.auc(pos, neg))
            boots.append(graded.auc_boots(pos, neg, neg_counts=self.benign_counts,
                                          rng=np.random.default_rng([self.seed, 1 + i])))
        return float(np.mean(values)), np.mean(boots, axis=0)
