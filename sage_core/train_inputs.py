"""What the trainer reads besides the weights it trains, built once in :meth:`Trainer.setup
<sage_core.trainer.Trainer.setup>` (and by :func:`sage_core.trainer.prepare` in a sweep's driver):
the frozen base encoder, the training prompts, the cached base data, the evaluator, and the
tokenised step inputs every batch is cut from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .cache import cached_embeddings
from .codebook import BaseData, build_base_data
from .data import load_prompts
from .defs.config import TrainConfig
from .defs.errors import ConfigError
from .diagnostics import geometry_report
from .encoders import TextEncoder, load_encoder
from .losses import unsafe_targets
from .precision import weights_dtype

__all__ = ["base_encoder", "training_prompts", "base_data", "geometry_base", "text_evaluator_factory",
           "make_evaluator", "StepInputs"]


def base_encoder(cfg: TrainConfig, device: torch.device | str = "cpu") -> TextEncoder:
    return load_encoder(cfg.encoder, max_length=cfg.max_length, device=device, dtype=weights_dtype(cfg.precision))


def training_prompts(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    return (load_prompts(cfg.safe_prompts, limit=cfg.max_pairs),
            load_prompts(cfg.unsafe_prompts, limit=cfg.max_pairs))


def base_data(cfg: TrainConfig, enc: TextEncoder, *, progress: bool) -> BaseData:
    safe, unsafe = training_prompts(cfg)
    return build_base_data(enc, safe_prompts=safe, unsafe_prompts=unsafe, concept=cfg.concept,
                           cache_dir=cfg.resolved_cache_dir(), progress=progress)


def geometry_base(enc: TextEncoder, cfg: TrainConfig) -> tuple[list[str], torch.Tensor]:
    prompts = load_prompts(cfg.diag_prompts, limit=cfg.diag_samples)
    if len(prompts) <= cfg.diag_k:
        raise ConfigError(f"diag_prompts={cfg.diag_prompts!r} has {len(prompts)} prompts; diag_k={cfg.diag_k} "
                          "needs more")
    return prompts, cached_embeddings(enc, prompts, cache_dir=cfg.resolved_cache_dir(), tag="diag")


def text_evaluator_factory() -> Callable[[TextEncoder, TrainConfig], Callable[[TextEncoder], dict]] | None:
    """The text-level evaluator (asr_text, util_text, geometry) when the evaluation module is present."""
    try:
        from .evaluation import (  # lazy: torch evaluators; None without the evaluation module
            TextEvaluator,
            build_eval_config,
        )
    except ImportError:
        return None

    def make(enc: TextEncoder, cfg: TrainConfig):
        return TextEvaluator(enc, build_eval_config(cfg.eval_config_values()), cache_dir=cfg.resolved_cache_dir())

    return make


def make_evaluator(enc: TextEncoder, cfg: TrainConfig, *, text: bool) -> Callable[[TextEncoder], dict[str, float]]:
    """The text-level evaluator when ``text`` (and the evaluation module is present), else the geometry alone."""
    factory = text_evaluator_factory() if text else None
    if factory is not None:
        return factory(enc, cfg)
    prompts, base = geometry_base(enc, cfg)
    return lambda trained: geometry_report(trained.embed(prompts), base, k=cfg.diag_k)


@dataclass(frozen=True)
class StepInputs:
    """Everything a step reads besides the weights: tokens of every prompt and the cached base data."""

    safe: dict[str, torch.Tensor]
    unsafe: dict[str, torch.Tensor]
    concept: dict[str, torch.Tensor]
    b_all: torch.Tensor  # f0(safe prompts)
    m_all: torch.Tensor  # f0 of each safe prompt's farthest codebook entry (the DES anchors)
    v: torch.Tensor  # concept direction
    u: torch.Tensor  # f0(empty prompt)
    scale: float

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, Any]:
        s_idx = torch.as_tensor(idx % len(self.safe["input_ids"]))
        u_idx = torch.as_tensor(idx % len(self.unsafe["input_ids"]))
        return {"safe": {k: t[s_idx].to(device) for k, t in self.safe.items()},
                "unsafe": {k: t[u_idx].to(device) for k, t in self.unsafe.items()},
                "concept": {k: t.to(device) for k, t in self.concept.items()},
                "b": self.b_all[s_idx].to(device),
                "targets": unsafe_targets(self.m_all[u_idx].to(device), self.v, self.scale)}
