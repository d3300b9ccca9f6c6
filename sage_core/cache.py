"""Frozen base-encoder embeddings, computed once and reused by every trial and run.

Files are safetensors, keyed by a hash of the encoder weights, the exact token ids of the
prompts (so the tokenizer and max length are in the key) and anything else the caller adds.
Writes go to a temporary name and are renamed into place: a reader never sees half a file,
and two processes racing to build the same entry both end up with a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .encoders import TextEncoder
from .errors import StorageError

__all__ = ["cache_key", "cached_embeddings", "atomic_save", "load_cached"]


def _hash_tokens(tokens: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tokens):
        h.update(name.encode())
        h.update(tokens[name].to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(encoder: TextEncoder, prompts: Sequence[str], **extra: object) -> str:
    """sha256 over (weights, token ids of ``prompts``, attention-mask use, extra key/values)."""
    tokens = encoder.tokenize(prompts)
    h = hashlib.sha256()
    h.update(encoder.fingerprint().encode())
    h.update(_hash_tokens(tokens).encode())
    h.update(json.dumps({"mask": encoder.use_attention_mask, "n": len(prompts), **extra},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """safetensors file written under a temporary name in the same folder, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_cached(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache file, or ``None`` if it is missing or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None


def cached_embeddings(encoder: TextEncoder, prompts: Sequence[str], *, cache_dir: str | os.PathLike,
                      tag: str, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Base embeddings ``[N, L, H]`` of ``prompts``, from ``cache_dir`` when already computed.

    ``tag`` only names the file (``<tag>-<key>.safetensors``); the key decides reuse.
    """
    if not prompts:
        raise ValueError("cached_embeddings needs at least one prompt")
    key = cache_key(encoder, prompts)
    path = Path(cache_dir) / "embeddings" / f"{tag}-{key[:24]}.safetensors"
    hit = load_cached(path)
    if hit is not None and hit["embeddings"].shape[0] == len(prompts):
        return hit["embeddings"]
    emb = encoder.embed(prompts, batch_size=batch_size, progress=progress, desc=f"base embeddings: {tag}")
    try:
        atomic_save({"embeddings": emb}, path, metadata={"tag": tag, "key": key, "encoder": encoder.source})
    except OSError as exc:
        raise StorageError(f"cannot write the embedding cache in {path.parent}: {exc.strerror or exc}") from None
    return emb
