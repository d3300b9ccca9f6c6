"""Image-level evaluation (the truth the text-level proxies approximate): GPU minutes per trial.

``ImageEvaluator(cfg, cache_dir=...)`` then ``iev(aligned) -> dict``:

- ``asr``, ``asr_<set>``: NudeNet unsafe rate on one image per attack prompt (``nudity.py``);
- ``tifa``, ``tifa_<category>``: when ``tifa_questions`` and ``vqa_model`` are set (``tifa.py``);
- ``clipscore``: when ``clip_model`` is set (``clip_metrics.py``);
- ``fid``: when ``fid_reference`` (and ``clip_model``, the feature extractor) are set.

A metric whose inputs are not configured is left out and named in ``skipped`` with the setting
that enables it. Images and detections are cached, so re-evaluating an encoder is free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..data import load_prompts
from ..defs.errors import ConfigError
from ..encoders import TextEncoder
from .clip_metrics import ClipModel, feature_stats, frechet_distance, load_reference_stats
from .config import EvalConfig, metric_suffix
from .generation import GenerationSettings, ImageGenerator
from .nudity import NudityDetector, unsafe_rate
from .tifa import BlipVQA, load_tifa_questions, match_choice, tifa_scores

if TYPE_CHECKING:
    from .tifa import TifaQuestion

__all__ = ["ImageEvaluator"]


class ImageEvaluator:
    """Generates with the frozen SD pipeline of ``cfg.sd_model`` and scores the images."""

    def __init__(self, cfg: EvalConfig, *, cache_dir: str | os.PathLike, progress: bool = False):
        if not cfg.sd_model:
            raise ConfigError("image-level evaluation needs sd_model: a local Stable Diffusion folder "
                              "(e.g. --set sd_model=/models/stable-diffusion-v1-4)")
        self.cfg = cfg
        self.progress = progress
        cache = (Path(cfg.image_cache_dir).expanduser() if cfg.image_cache_dir
                 else Path(cache_dir).expanduser() / "images")
        self.generator = ImageGenerator(
            cfg.sd_model, cache_dir=cache, device=cfg.device, precision=cfg.precision,
            batch_size=cfg.image_batch_size,
            settings=GenerationSettings(steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                                        height=cfg.height, width=cfg.width))
        self.attacks = {name: load_prompts(src, limit=cfg.image_attack_samples)
                        for name, src in cfg.attack_sets.items()}
        self.skipped: dict[str, str] = {}
        self._detector: NudityDetector | None = None
        self._vqa: BlipVQA | None = None
        self._clip: ClipModel | None = None
        self._tifa: list[TifaQuestion] | None = None
        if cfg.tifa_questions or cfg.vqa_model:
            if not (cfg.tifa_questions and cfg.vqa_model):
                raise ConfigError("tifa needs both tifa_questions (TIFA v1.0 JSON) and vqa_model (local folder); "
                                  f"got tifa_questions={cfg.tifa_questions!r}, vqa_model={cfg.vqa_model!r}")

            self._tifa = load_tifa_questions(cfg.tifa_questions, limit_images=cfg.tifa_samples)
        else:
            self.skipped["tifa"] = "not configured (set tifa_questions=FILE.json and vqa_model=FOLDER)"
        if not cfg.clip_model:
            self.skipped["clipscore"] = "not configured (set clip_model=FOLDER)"
        if not cfg.fid_reference:
            self.skipped["fid"] = "not configured (set fid_reference=STATS.npz or an image folder, and clip_model)"
        elif not cfg.clip_model:
            raise ConfigError("fid uses CLIP image features here: set clip_model=FOLDER together with fid_reference")
        self.info: dict[str, str] = {}

    # --- lazily loaded scorers --------------------------------------------------------------------
    def detector(self) -> NudityDetector:
        if self._detector is None:
            self._detector = NudityDetector()
            self.info.update(self._detector.describe())
        return self._detector

    def clip(self) -> ClipModel:
        if self._clip is None:
            if not self.cfg.clip_model:
                raise ConfigError("clipscore and fid need clip_model=FOLDER (a local CLIP model)")
            self._clip = ClipModel(self.cfg.clip_model)
            self.info["clip_model"] = self._clip.source
            self.info["fid_features"] = f"CLIP image embeddings of {self._clip.source} (not Inception)"
        return self._clip

    def vqa(self) -> BlipVQA:
        if self._vqa is None:
            if not self.cfg.vqa_model:
                raise ConfigError("tifa needs vqa_model=FOLDER (a local VQA model)")
            self._vqa = BlipVQA(self.cfg.vqa_model)
            self.info["vqa_model"] = str(self.cfg.vqa_model)
        return self._vqa

    # --- metrics ----------------------------------------------------------------------------------
    def _images(self, encoder: TextEncoder, prompts: list[str]) -> list[Path]:
        seeds = [self.cfg.seed + i for i in range(len(prompts))]
        return self.generator.generate(encoder, prompts, seeds=seeds, progress=self.progress)

    def asr(self, encoder: TextEncoder) -> dict[str, float]:
        per_set = {}
        for name, prompts in self.attacks.items():
            dets = self.detector().detect(self._images(encoder, prompts))
            per_set[f"asr_{metric_suffix(name)}"] = unsafe_rate(dets, labels=self.cfg.nudenet_labels,
                                                                threshold=self.cfg.nudenet_threshold)
        return {"asr": sum(per_set.values()) / len(per_set), **per_set}

    def tifa(self, encoder: TextEncoder) -> dict[str, float]:
        questions = self._tifa
        if questions is None:
            raise ConfigError("tifa needs tifa_questions=FILE.json (TIFA v1.0) and vqa_model=FOLDER")
        captions = list(dict.fromkeys((q.id, q.caption) for q in questions))
        paths = dict(zip([c[0] for c in captions], self._images(encoder, [c[1] for c in captions]), strict=True))
        images = {i: Image.open(p).convert("RGB") for i, p in paths.items()}
        free = self.vqa().answer([images[q.id] for q in questions], [q.question for q in questions])
        chosen = [match_choice(f, q.choices) for f, q in zip(free, questions, strict=True)]
        return tifa_scores(questions, chosen)

    def clip_and_fid(self, encoder: TextEncoder) -> dict[str, float]:
        out: dict[str, float] = {}
        if not self.cfg.clip_model:
            return out
        prompts = load_prompts(self.cfg.clipscore_prompts, limit=self.cfg.clipscore_samples)
        paths = self._images(encoder, prompts)
        scores = self.clip().clipscore(paths, prompts)
        out["clipscore"] = sum(scores) / len(scores)
        if self.cfg.fid_reference:
            mu_r, sig_r = load_reference_stats(self.cfg.fid_reference, clip=self.clip())
            mu, sig = feature_stats(self.clip().image_features(paths))
            out["fid"] = frechet_distance(mu, sig, mu_r, sig_r)
        return out

    def __call__(self, aligned_encoder: TextEncoder) -> dict[str, float]:
        """Every configured image-level metric of ``aligned_encoder`` (flat dict)."""
        out = self.asr(aligned_encoder)
        if self._tifa is not None:
            out.update(self.tifa(aligned_encoder))
        out.update(self.clip_and_fid(aligned_encoder))
        return out

    def evaluate_with_base(self, aligned_encoder: TextEncoder, base_encoder: TextEncoder | None = None, *,
                           base_metrics: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
        """The columns of one image-level result row, and the base encoder's metrics.

        Columns: every configured metric of ``aligned_encoder``, ``base_<metric>`` of the base
        encoder, and the provenance in :attr:`info` (detector sha256, VQA/CLIP folders). The base
        is evaluated here unless ``base_metrics`` is given (a sweep measures it once, for every
        survivor). ``sage eval --fidelity image`` and the sweeps' image stage both build rows so.
        """
        metrics = self(aligned_encoder)
        if base_metrics is None:
            base_metrics = self(base_encoder) if base_encoder is not None else {}
        columns: dict[str, Any] = dict(metrics)
        columns.update({f"base_{k}": v for k, v in base_metrics.items()})
        columns.update(self.info)
        return columns, dict(base_metrics)
