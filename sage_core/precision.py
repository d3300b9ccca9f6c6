"""Numeric precision of a training run: the dtype of the trainable weights and of what flows out of them.

``auto``/``fp32`` keep fp32 weights (``bf16`` adds autocast forwards on a GPU); ``fp64`` runs the
whole step in float64 on any device: a reference run whose numbers do not depend on the CPU's
kernels or thread count at any tolerance a test needs (rounding at 1e-16 instead of 1e-7), used by
the numerics tests and for checking a suspicious fp32 result.
"""

from __future__ import annotations

import torch

__all__ = ["weights_dtype", "widen", "uses_autocast"]


def weights_dtype(precision: str) -> torch.dtype:
    return torch.float64 if precision == "fp64" else torch.float32


def widen(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision and fp32 tensors; fp64 stays fp64."""
    return t if t.dtype == torch.float64 else t.float()


def uses_autocast(precision: str, device: torch.device) -> bool:
    """bf16 autocast forwards: asked for, or ``auto`` on a GPU."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")
