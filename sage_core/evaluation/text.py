"""Text-level evaluation: seconds on a CPU, run at every rung of every trial.

``TextEvaluator(base, cfg, cache_dir=...)`` does the base-encoder work once (prompt samples,
base embeddings, the calibrated concept-score threshold, base scores; all cached on disk), then
``ev(aligned)`` embeds one fixed list of prompts with the aligned encoder and returns a flat dict:

- ``asr_text``, ``asr_text_<set>``: share of attack prompts whose concept score
  cos(meanpool(aligned(p)), meanpool(base("nudity"))) exceeds the threshold tau calibrated on the
  base encoder (``benign_fraction`` of benign prompts above tau); ``asr_text`` = mean over sets;
- ``base_asr_text``, ``base_asr_text_<set>``: the same with the base encoder;
- ``util_text``, ``util_text_<category>``: share of minimal pairs (p, sibling q) kept,
  cos(a_p, b_p) > cos(a_p, b_q); ``util_text`` = mean over categories (the base scores 1);
- ``spread_ratio``, ``jaccard``, ``jaccard_10``, ``distortion_*``: ``diagnostics.geometry_report``
  on benign prompts.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

import torch

from ..cache import atomic_save, cache_key, cached_embeddings, load_cached
from ..data import load_prompts
from ..diagnostics import geometry_report
from ..encoders import TextEncoder
from ..errors import ModelError, StorageError
from .config import EvalConfig, metric_suffix
from .metrics import attack_rate, calibrate_threshold, concept_scores, mean_pool, minimal_pairs_kept
from .pairs import load_util_pairs

__all__ = ["TextEvaluator", "sample_prompts"]


def sample_prompts(prompts: Sequence[str], k: int | None, *, seed: int) -> list[str]:
    """A seeded sample of ``k`` prompts kept in file order (all of them if ``k`` is None or >= N)."""
    if k is None or k >= len(prompts):
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), k))
    return [prompts[i] for i in keep]


class TextEvaluator:
    """Text-level metrics of aligned encoders against one frozen base encoder."""

    def __init__(self, base_encoder: TextEncoder, cfg: EvalConfig | None = None, *,
                 cache_dir: str | os.PathLike):
        self.base = base_encoder
        self.cfg = cfg = cfg if cfg is not None else EvalConfig()
        self.cache_dir = Path(cache_dir).expanduser()

        benign_all = load_prompts(cfg.benign_prompts)
        self.benign = sample_prompts(benign_all, cfg.calibration_samples, seed=cfg.sample_seed)
        self.geometry_prompts = sample_prompts(benign_all, cfg.geometry_samples, seed=cfg.sample_seed + 1)
        if len(self.geometry_prompts) <= cfg.geometry_k:
            raise ModelError(f"geometry_k={cfg.geometry_k} needs more than {len(self.geometry_prompts)} "
                             f"benign prompts in {cfg.benign_prompts!r}")
        self.attacks = {name: sample_prompts(load_prompts(src), cfg.attack_samples, seed=cfg.sample_seed)
                        for name, src in cfg.attack_sets.items()}
        self.pairs = load_util_pairs(cfg.util_pairs, groups_per_category=cfg.util_groups)

        # The concept vector c and the threshold tau live in base space and never change.
        c_tok = base_encoder.tokenize([cfg.concept])
        c_emb = base_encoder.embed_tokens(c_tok)
        self.concept_vector = mean_pool(c_emb, c_tok["attention_mask"])[0]
        self.benign_scores, self.threshold = self._calibrate()

        # One list for the aligned encoder per call: geometry + util prompts, then attack prompts.
        self._full_prompts = list(dict.fromkeys(self.geometry_prompts + self.pairs.prompts))
        where = {p: i for i, p in enumerate(self._full_prompts)}
        self._geo_idx = torch.tensor([where[p] for p in self.geometry_prompts])
        self._util_idx = torch.tensor([where[p] for p in self.pairs.prompts])
        self._attack_slices: dict[str, slice] = {}
        start = len(self._full_prompts)
        for name, prompts in self.attacks.items():
            self._attack_slices[name] = slice(start, start + len(prompts))
            start += len(prompts)
        self._all_prompts = self._full_prompts + [p for ps in self.attacks.values() for p in ps]

        full = cached_embeddings(base_encoder, self._full_prompts, cache_dir=self.cache_dir,
                                 tag="eval-text", batch_size=cfg.batch_size)
        self._base_geo = full[self._geo_idx]
        self._base_util = full[self._util_idx]
        self._base_attack_scores = {name: self._scores_cached(prompts, tag=f"attack-{metric_suffix(name)}")
                                    for name, prompts in self.attacks.items()}
        self._base_metrics = self._asr_metrics(self._base_attack_scores, prefix="base_")
        self._base_metrics.update({f"base_{k}": v for k, v in self._util_metrics(self._base_util).items()})

    # --- base side, cached --------------------------------------------------------------------
    def _scores(self, encoder: TextEncoder, prompts: Sequence[str]) -> torch.Tensor:
        tok = encoder.tokenize(prompts)
        emb = encoder.embed_tokens(tok, batch_size=self.cfg.batch_size)
        return concept_scores(mean_pool(emb, tok["attention_mask"]), self.concept_vector)

    def _score_path(self, prompts: Sequence[str], *, tag: str, **extra: object) -> Path:
        key = cache_key(self.base, prompts, concept=self.cfg.concept, kind="concept-scores", **extra)
        return self.cache_dir / "eval" / f"{tag}-{key[:24]}.safetensors"

    def _save(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        try:
            atomic_save(tensors, path, metadata={"encoder": self.base.source, "concept": self.cfg.concept})
        except OSError as exc:
            raise StorageError(f"cannot write the evaluation cache in {path.parent}: {exc.strerror or exc}") from None

    def _scores_cached(self, prompts: Sequence[str], *, tag: str) -> torch.Tensor:
        path = self._score_path(prompts, tag=tag)
        hit = load_cached(path)
        if hit is not None and hit["scores"].numel() == len(prompts):
            return hit["scores"]
        scores = self._scores(self.base, prompts)
        self._save({"scores": scores}, path)
        return scores

    def _calibrate(self) -> tuple[torch.Tensor, float]:
        path = self._score_path(self.benign, tag="threshold", fraction=self.cfg.benign_fraction)
        hit = load_cached(path)
        if hit is not None and hit["scores"].numel() == len(self.benign):
            return hit["scores"], float(hit["threshold"])
        scores = self._scores(self.base, self.benign)
        tau = calibrate_threshold(scores, benign_fraction=self.cfg.benign_fraction)
        self._save({"scores": scores, "threshold": torch.tensor(tau, dtype=torch.float64)}, path)
        return scores, tau

    # --- metrics ------------------------------------------------------------------------------
    def _asr_metrics(self, scores: dict[str, torch.Tensor], *, prefix: str = "") -> dict[str, float]:
        per_set = {f"{prefix}asr_text_{metric_suffix(n)}": attack_rate(s, self.threshold) for n, s in scores.items()}
        out = {f"{prefix}asr_text": sum(per_set.values()) / len(per_set)} if per_set else {}
        out.update(per_set)
        return out

    def _util_metrics(self, aligned_util: torch.Tensor) -> dict[str, float]:
        kept = minimal_pairs_kept(aligned_util, self._base_util, self.pairs.groups).double()
        per_group = kept.flatten(1).mean(dim=1)
        cats = self.pairs.categories
        per_cat = {}
        for cat in self.pairs.category_names():
            rows = torch.tensor([i for i, c in enumerate(cats) if c == cat])
            per_cat[f"util_text_{metric_suffix(cat)}"] = float(per_group[rows].mean())
        return {"util_text": sum(per_cat.values()) / len(per_cat), **per_cat}

    def base_metrics(self) -> dict[str, float]:
        """The base encoder's own figures: ``base_asr_text*`` and ``base_util_text*`` (1 by construction)."""
        return dict(self._base_metrics)

    def __call__(self, aligned_encoder: TextEncoder) -> dict[str, float]:
        """All text-level metrics of ``aligned_encoder`` (flat dict), base figures included."""
        if aligned_encoder.max_length != self.base.max_length or aligned_encoder.hidden_size != self.base.hidden_size:
            raise ModelError(f"aligned encoder ({aligned_encoder.max_length} tokens x {aligned_encoder.hidden_size}) "
                             f"does not match the base ({self.base.max_length} x {self.base.hidden_size}); "
                             "evaluate it against the base encoder it was trained from")
        tok = aligned_encoder.tokenize(self._all_prompts)
        emb = aligned_encoder.embed_tokens(tok, batch_size=self.cfg.batch_size)
        n_full = len(self._full_prompts)
        full = emb[:n_full]
        pooled = mean_pool(emb[n_full:], tok["attention_mask"][n_full:])
        scores = {name: concept_scores(pooled[sl.start - n_full:sl.stop - n_full], self.concept_vector)
                  for name, sl in self._attack_slices.items()}
        out = self._asr_metrics(scores)
        out.update(self._util_metrics(full[self._util_idx]))
        out.update(geometry_report(full[self._geo_idx], self._base_geo, k=self.cfg.geometry_k))
        out.update(self.base_metrics())
        return out

    def describe(self) -> dict[str, object]:
        """How the figures were made (sizes, threshold), for reports and result rows."""
        return {"threshold": self.threshold, "benign_prompts": len(self.benign),
                "geometry_prompts": len(self.geometry_prompts),
                "attack_prompts": {n: len(p) for n, p in self.attacks.items()},
                "util_groups": int(self.pairs.groups.shape[0]), "util_prompts": len(self.pairs.prompts),
                "aligned_prompts_per_call": len(self._all_prompts)}
