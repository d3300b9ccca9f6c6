"""SAGE as a plain PyTorch library: config, encoders, prompt data, base cache, codebook,
losses (DES, ESP, LSA), geometry diagnostics, the DeepSpeed trainer and evaluators.

Never imports Ray. Heavy modules load on first use: ``from sage_core import train``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .defs.config import TrainConfig, load_config
from .defs.errors import ConfigError, DataError, ModelError, NonFiniteLossError, SageError, StorageError, TrialError

__all__ = ["TrainConfig", "load_config", "train", "prepare", "Trainer", "TrainerCallback", "load_encoder",
           "SageError", "ConfigError", "DataError", "ModelError", "StorageError", "TrialError",
           "NonFiniteLossError", "deepspeed_probe"]

_LAZY = {"train": "trainer", "prepare": "trainer", "Trainer": "trainer", "TrainerCallback": "trainer",
         "load_encoder": "encoders", "deepspeed_probe": "distributed"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sage_core' has no attribute {name!r}")
