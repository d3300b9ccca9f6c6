"""The DES codebook and everything the frozen encoder contributes to training, computed once.

For each unsafe prompt the codebook search ranks all safe prompts by cosine of their flattened
base embeddings: the least similar ("farthest") one m(x_u) becomes the target
t(x_u) = m(x_u) - s*v; the most similar one is kept for inspection only (no loss uses it).
The reference scripts recompute the frozen embeddings every step; here they live in a
safetensors cache keyed by weights, token ids and concept, so the concept scale s can change
without touching the cache (targets are formed per batch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .cache import build_once, cache_key, cached_embeddings
from .encoders import TextEncoder
from .losses import flat
from .precision import widen

__all__ = ["BaseData", "codebook_search", "build_base_data"]


@dataclass(frozen=True)
class BaseData:
    """Frozen-encoder tensors a training run needs (all float32 on CPU until moved)."""

    safe: torch.Tensor          # [Ns, L, H]  b = f0(x_safe)
    farthest: torch.Tensor      # [Nu] int64  index into safe of m(x_u)
    nearest: torch.Tensor       # [Nu] int64  most similar safe entry (not used by any loss)
    concept: torch.Tensor       # [1, L, H]   f0(concept)
    empty: torch.Tensor         # [1, L, H]   u = f0("")
    key: str

    @property
    def direction(self) -> torch.Tensor:
        """Unit concept direction v = c/|c| in the flattened space, shaped [1, L, H]."""
        c = self.concept
        return c / flat(c).norm()

    def mean_safe_norm(self) -> float:
        return float(flat(self.safe).norm(dim=1).mean())


def codebook_search(unsafe: torch.Tensor, safe: torch.Tensor, *, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine search (what FAISS IndexFlatIP on L2-normalised vectors does), in chunks.

    Returns (nearest, farthest) safe indices for each unsafe row.
    """
    s = F.normalize(widen(flat(safe)), dim=1)
    nearest, farthest = [], []
    for i in range(0, unsafe.shape[0], chunk):
        q = F.normalize(widen(flat(unsafe[i:i + chunk])), dim=1)
        sim = q @ s.T
        nearest.append(sim.argmax(dim=1))
        farthest.append(sim.argmin(dim=1))
    return torch.cat(nearest), torch.cat(farthest)


def build_base_data(encoder: TextEncoder, *, safe_prompts: Sequence[str], unsafe_prompts: Sequence[str],
                    concept: str, cache_dir: str | Path, progress: bool = False) -> BaseData:
    """Load or compute (and cache) base embeddings and codebook targets."""
    cache_dir = Path(cache_dir)
    safe = cached_embeddings(encoder, safe_prompts, cache_dir=cache_dir, tag="safe", progress=progress)
    unsafe = cached_embeddings(encoder, unsafe_prompts, cache_dir=cache_dir, tag="unsafe", progress=progress)
    anchors = cached_embeddings(encoder, [concept, ""], cache_dir=cache_dir, tag="concept")
    key = hashlib.sha256("|".join([cache_key(encoder, safe_prompts), cache_key(encoder, unsafe_prompts),
                                   cache_key(encoder, [concept, ""])]).encode()).hexdigest()
    path = cache_dir / "codebook" / f"codebook-{key[:24]}.safetensors"
    targets = build_once(path, lambda: dict(zip(("nearest", "farthest"), codebook_search(unsafe, safe), strict=True)),
                         valid=lambda hit: "farthest" in hit and hit["farthest"].shape[0] == len(unsafe_prompts),
                         metadata={"key": key, "encoder": encoder.source})
    nearest, farthest = targets["nearest"], targets["farthest"]
    return BaseData(safe=safe, farthest=farthest, nearest=nearest, concept=anchors[0:1],
                    empty=anchors[1:2], key=key)
