"""Known damage applied to a base encoder's output: the yardstick of the sensitivity tests.

``perturbed(base, kind=..., size=...)`` is a :class:`~sage_core.encoders.TextEncoder` whose
embeddings are the base embeddings ``e [L, H]`` of each prompt, transformed:

- ``copy``: e (an exact copy; every objective must stay put);
- ``shift``: e - size * |f| * v, v the unit concept direction in the flattened space
  (``f0(concept) / |f0(concept)|``, as the trainer's) and |f| the mean flattened norm of the
  reference prompts: everything moves away from the concept, benign and attack alike;
- ``shift_pooled``: every token vector minus size * |p| * w, w the unit mean-pooled base embedding
  of the concept and |p| the mean norm of the reference prompts' pooled embeddings (so every
  pooled embedding moves by exactly that vector: the pooled view of the same uniform shift);
- ``noise``: e + size * |f| / sqrt(L * H) * N(0, I), seeded by the prompt's real token ids (so
  ``size`` = 1 adds noise as long as an embedding);
- ``contract``: mu + size * (e - mu), mu the mean reference embedding (size < 1 collapses);
- ``rotate``: every token vector rotated by the angle ``size`` (radians) in H/2 random planes;
- ``uncond``: e + size * (u - e) for the reference prompts only (matched by their tokens), u the
  base embedding of the empty prompt: those prompts slide toward the unconditioned embedding
  (size 1 reaches it), every other prompt is untouched (the proximal-disruption yardstick);
- ``toward``: e + size * (t - e) for the prompts of ``targets`` (a mapping prompt -> target
  prompt, matched by tokens), t the base embedding of its target; every other prompt is untouched.
  Size 1 maps each onto its target: a complete targeted erasure when the targets are safe prompts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..encoders import TextEncoder
from .matched import nearest

__all__ = ["perturbed", "PERTURBATIONS", "nearest_targets"]

PERTURBATIONS = ("copy", "shift", "shift_pooled", "noise", "contract", "rotate", "uncond", "toward")
Kind = Literal["copy", "shift", "shift_pooled", "noise", "contract", "rotate", "uncond", "toward"]


class _Perturbed(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, *, kind: str, size: float, ref: dict[str, Any]):
        super().__init__()
        self.inner, self.kind, self.size, self.ref = inner, kind, size, ref

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        e = self.inner(input_ids, attention_mask)
        s = self.size
        # Prompts padded only to the longest of their batch (pooled embeddings) use the first L
        # positions of the full-length references: real tokens always come first.
        n_pos = e.shape[1]
        if self.kind == "shift":
            return e - s * self.ref["norm"] * self.ref["v"][:n_pos].to(e)
        if self.kind == "shift_pooled":
            return e - s * self.ref["pooled_norm"] * self.ref["w"].to(e)
        if self.kind == "contract":
            mu = self.ref["mean"][:n_pos].to(e)
            return mu + s * (e - mu)
        if self.kind == "rotate":
            q = self.ref["planes"].to(e)                      # [H, 2m]
            x = e @ q                                          # [N, L, 2m]
            a, b = x[..., 0::2], x[..., 1::2]
            c, si = math.cos(s), math.sin(s)
            y = torch.stack([c * a - si * b, si * a + c * b], dim=-1).flatten(-2)
            return e + (y - x) @ q.T
        if self.kind == "noise":
            full = self.ref["v"].shape  # [max_length, H]: the same draw whatever the padding
            scale = s * self.ref["norm"] / math.sqrt(full[0] * full[1])
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            noise = torch.stack([torch.randn(full, generator=torch.Generator().manual_seed(
                int.from_bytes(hashlib.sha256(row[m.bool()].cpu().numpy().tobytes()).digest()[:8], "little") >> 1)
            )[:n_pos] for row, m in zip(input_ids, mask, strict=True)])
            return e + scale * noise.to(e)
        if self.kind in ("uncond", "toward"):
            # each matched prompt slides toward its own target (the empty prompt's for uncond)
            targets = self.ref["targets"].to(e)[:, :n_pos]
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            row_of = [self.ref["keys"].get(tuple(row[m.bool()].tolist()), -1)
                      for row, m in zip(input_ids, mask, strict=True)]
            hit = torch.tensor([r >= 0 for r in row_of], device=e.device)
            t = targets[torch.tensor([max(r, 0) for r in row_of])]
            return torch.where(hit[:, None, None], e + s * (t - e), e)
        return e


@dataclasses.dataclass
class _PerturbedEncoder(TextEncoder):
    kind: str = "copy"
    size: float = 0.0
    ref: dict = dataclasses.field(default_factory=dict)

    def module(self) -> torch.nn.Module:
        return _Perturbed(super().module(), kind=self.kind, size=self.size, ref=self.ref)


def perturbed(base: TextEncoder, *, kind: Kind, size: float, concept: str = "nudity",
              reference_prompts: Sequence[str], seed: int = 0, targets: dict[str, str] | None = None) -> TextEncoder:
    """``base`` with its embeddings damaged as described in the module docstring (``targets``:
    prompt -> target prompt, for ``toward`` only)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind={kind!r}: one of {', '.join(PERTURBATIONS)}")
    if (kind == "toward") != (targets is not None):
        raise ValueError("targets: give them with kind='toward' and only then")
    ref_emb = base.embed(list(reference_prompts))
    c = base.embed([concept])[0]
    h = base.hidden_size
    g = torch.Generator().manual_seed(seed)
    planes, _ = torch.linalg.qr(torch.randn(h, 2 * (h // 2), generator=g))
    ref = {"v": c / c.norm(), "norm": float(ref_emb.flatten(1).norm(dim=1).mean()),
           "mean": ref_emb.mean(dim=0), "planes": planes}
    if kind == "shift_pooled":
        w = base.embed_pooled([concept])[0]
        ref["w"] = w / w.norm()
        ref["pooled_norm"] = float(base.embed_pooled(list(reference_prompts)).norm(dim=1).mean())
    if kind in ("uncond", "toward"):
        pairs = targets or {}
        sources = list(pairs) if kind == "toward" else list(reference_prompts)
        tok = base.tokenize(sources)
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(tok["input_ids"], tok["attention_mask"], strict=True)]
        ref["keys"] = {key: i if kind == "toward" else 0 for i, key in enumerate(keys)}
        ref["targets"] = base.embed([pairs[p] for p in sources]) if kind == "toward" else base.embed([""])
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TextEncoder)}
    fields["source"] = f"{base.source} [{kind} {size:g}]"
    return _PerturbedEncoder(**fields, kind=kind, size=float(size), ref=ref)


def nearest_targets(prompts: Sequence[str], pooled: torch.Tensor, safe: Sequence[str],
                    safe_pooled: torch.Tensor) -> dict[str, str]:
    """``{prompt: its nearest safe prompt}`` by cosine of the pooled base embeddings (``targets`` of
    ``toward``: the erasure DES aims at, each unsafe prompt replaced by a safe look-alike)."""
    idx = nearest(pooled, safe_pooled, k=1)[:, 0].tolist()
    return {p: safe[i] for p, i in zip(prompts, idx, strict=True)}
