"""Evaluation at two fidelities: text-level proxies (CPU, seconds) and image-level truth (GPU).

``TextEvaluator(base, EvalConfig(), cache_dir=...)`` then ``ev(aligned) -> dict``;
``ImageEvaluator(EvalConfig(sd_model=...), cache_dir=...)`` then ``iev(aligned) -> dict``.
The two are compared on the same trials by ``analysis.calibration`` (Kendall and Spearman with
bootstrap intervals; the sweeps' image stage runs it by itself), which this package never imports.
Image-level modules (diffusers, NudeNet, transformers VQA/CLIP) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import NUDENET_UNSAFE_LABELS, EvalConfig, build_eval_config, metric_suffix
from .text import TextEvaluator

__all__ = ["EvalConfig", "build_eval_config", "TextEvaluator", "ImageEvaluator", "NUDENET_UNSAFE_LABELS",
           "metric_suffix"]

_LAZY = {"ImageEvaluator": "image"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sage_core.evaluation' has no attribute {name!r}")
