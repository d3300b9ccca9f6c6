"""Checkpoints: safetensors weights + JSON metadata, never pickles.

A checkpoint folder::

    text_encoder/        save_pretrained: CLIPTextModel.from_pretrained(<dir>/text_encoder)
    tokenizer/           save_pretrained of the tokenizer
    optimizer.safetensors  optimizer moments (torch.optim state), for exact resume
    meta.json            resolved config, step, epoch, seed, code version, losses, metrics

It is written to a temporary sibling folder and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .defs.errors import StorageError
from .encoders import hf_api, quiet_hf_progress

__all__ = ["save_checkpoint", "read_meta", "check_checkpoint", "optimizer_state_to_tensors",
           "optimizer_state_from_tensors", "load_weights", "list_checkpoints", "META_FILE"]

META_FILE = "meta.json"
OPTIM_FILE = "optimizer.safetensors"


def optimizer_state_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a ``torch.optim`` state dict into safetensors tensors + a JSON-able skeleton."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, per_param in state["state"].items():
        names = []
        for name, value in per_param.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            names.append(name)
        skeleton["state"][str(idx)] = names
    return tensors, skeleton


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], skeleton: dict[str, Any]) -> dict[str, Any]:
    state = {int(idx): {name: tensors[f"state.{idx}.{name}"] for name in names}
             for idx, names in skeleton["state"].items()}
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in skeleton["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, tokenizer: Any,
                    meta: dict[str, Any], optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary sibling, then rename)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with quiet_hf_progress():
            hf_api(model).save_pretrained(tmp / "text_encoder", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "tokenizer")
        meta = dict(meta)
        if optimizer_state is not None:
            tensors, skeleton = optimizer_state_to_tensors(optimizer_state)
            save_file(tensors, str(tmp / OPTIM_FILE))
            meta["optimizer"] = skeleton
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"cannot write checkpoint {final}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


MAX_META_BYTES = 16 << 20


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``meta.json``, checked: a JSON object with a whole ``step`` >= 0 and, when
    present, a ``config`` object and a whole ``epoch`` >= 0."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise StorageError(f"{path}: not a sage checkpoint (no {META_FILE})")
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise StorageError(f"{meta_path}: larger than {MAX_META_BYTES >> 20} MiB; not a sage checkpoint's metadata")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{meta_path}: unreadable ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise StorageError(f"{meta_path}: not UTF-8 text (at byte {exc.start})") from None
    except OSError as exc:
        raise StorageError(f"{meta_path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict):
        raise StorageError(f"{meta_path}: expected a JSON object with step and config, got {type(meta).__name__}")
    for key, required in (("step", True), ("epoch", False)):
        value = meta.get(key)
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StorageError(f"{meta_path}: {key}={value!r} is not allowed (allowed: a whole number >= 0)")
    if "config" in meta and not isinstance(meta["config"], dict):
        raise StorageError(f"{meta_path}: config={type(meta['config']).__name__} is not allowed (allowed: an object "
                           "of TrainConfig keys)")
    if "optimizer" in meta and not _skeleton_ok(meta["optimizer"]):
        raise StorageError(f"{meta_path}: optimizer is not the skeleton sage writes ({{param_groups: [...], "
                           "state: {index: [names]}}})")
    return meta


def _skeleton_ok(skeleton: Any) -> bool:
    if not isinstance(skeleton, dict) or not isinstance(skeleton.get("param_groups"), list):
        return False
    if not all(isinstance(g, dict) for g in skeleton["param_groups"]):
        return False
    state = skeleton.get("state")
    return isinstance(state, dict) and all(
        isinstance(k, str) and k.isdigit() and isinstance(v, list) and all(isinstance(n, str) for n in v)
        for k, v in state.items())


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """One safetensors file, or one line naming it (truncated, corrupt, unreadable)."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StorageError(f"{file}: not a readable safetensors file ({first}); the checkpoint is damaged, "
                           "use an earlier one") from None


def check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Everything :class:`~sage_core.trainer.Trainer` resume reads, checked before any model loads:
    ``meta.json`` and the headers of every safetensors file (a truncated file fails here)."""
    meta = read_meta(path)
    folder = Path(path) / "text_encoder"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StorageError(f"{path}: no text_encoder/*.safetensors weights")
    optim = Path(path) / OPTIM_FILE
    for f in files + ([optim] if optim.is_file() else []):
        try:
            with safe_open(str(f), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StorageError(f"{f}: not a readable safetensors file ({first}); the checkpoint is damaged, "
                               "use an earlier one") from None
    return meta


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint (safetensors shards of ``text_encoder/``)."""
    folder = Path(path) / "text_encoder"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StorageError(f"{path}: no text_encoder/*.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(_load_safetensors(f))
    return weights


def load_optimizer_state(path: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any] | None:
    file = Path(path) / OPTIM_FILE
    if "optimizer" not in meta or not file.is_file():
        return None
    tensors = _load_safetensors(file)
    try:
        return optimizer_state_from_tensors(tensors, meta["optimizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"{file}: does not match the optimizer skeleton in {META_FILE} ({exc!r}); the "
                           "checkpoint is damaged, use an earlier one") from None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``<run_dir>/checkpoints``, oldest step first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if (p / META_FILE).is_file()), key=lambda p: p.name)
