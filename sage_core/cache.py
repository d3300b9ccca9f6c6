"""Frozen base-encoder embeddings, computed once and reused by every trial, run and sweep.

Files are safetensors, keyed by a hash of the encoder weights, the exact token ids of the
prompts (so the tokenizer and max length are in the key) and anything else the caller adds.
Content-addressed, so one user-level folder serves every sweep: :func:`sage_core.defs.locations.default_cache_dir` is
``$SAGE_CACHE_DIR``, else ``~/.cache/sage-sweeps`` (on a cluster, point it at shared storage).

Writes go to a temporary name and are renamed into place: a reader never sees half a file.
:func:`build_once` also holds a lock file beside the entry while it builds, so of two processes
that want the same missing entry one builds it and the other waits and loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .defs.errors import StorageError
from .defs.locations import CACHE_ENV
from .encoders import TextEncoder

__all__ = ["cache_key", "cached_embeddings", "atomic_save", "load_cached", "build_once"]



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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock`` (released when the holder exits, even by a crash).
    Without ``fcntl`` (Windows) there is no lock: the atomic rename still keeps the entry whole."""
    try:
        import fcntl  # lazy: fcntl is POSIX-only: on Windows the ImportError below means no lock
    except ImportError:  # pragma: no cover - POSIX only
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_name(path.name + ".lock"), "a+b")
    except OSError as exc:
        raise _unwritable(path, exc) from None
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_once(path: Path, build: Callable[[], dict[str, torch.Tensor]], *,
               valid: Callable[[dict[str, torch.Tensor]], bool] = lambda _: True,
               metadata: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors cached at ``path``; built (once, under a lock) and saved atomically when missing.

    ``valid`` rejects a readable entry that does not fit (then it is rebuilt). A process that finds
    another one building the entry waits for its lock and loads the result instead of building.
    """
    hit = load_cached(path)
    if hit is not None and valid(hit):
        return hit
    with _locked(path):
        hit = load_cached(path)  # built by whoever held the lock before us
        if hit is not None and valid(hit):
            return hit
        tensors = build()
        try:
            atomic_save(tensors, path, metadata=metadata)
        except OSError as exc:
            raise _unwritable(path, exc) from None
    return tensors


def _unwritable(path: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot write the cache in {path.parent}: {exc.strerror or exc}; set {CACHE_ENV} "
                        "(or cache_dir) to a writable folder")


def cached_embeddings(encoder: TextEncoder, prompts: Sequence[str], *, cache_dir: str | os.PathLike,
                      tag: str, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Base embeddings ``[N, L, H]`` of ``prompts``, from ``cache_dir`` when already computed.

    ``tag`` only names the file (``<tag>-<key>.safetensors``); the key decides reuse.
    """
    if not prompts:
        raise ValueError("cached_embeddings needs at least one prompt")
    key = cache_key(encoder, prompts)
    path = Path(cache_dir).expanduser() / "embeddings" / f"{tag}-{key[:24]}.safetensors"
    out = build_once(
        path,
        lambda: {"embeddings": encoder.embed(prompts, batch_size=batch_size, progress=progress,
                                             desc=f"base embeddings: {tag}")},
        valid=lambda hit: "embeddings" in hit and hit["embeddings"].shape[0] == len(prompts),
        metadata={"tag": tag, "key": key, "encoder": encoder.source})
    return out["embeddings"]
