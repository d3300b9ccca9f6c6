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
from safetensors.torch import load_file, save_file

from .encoders import quiet_hf_progress
from .errors import StorageError

__all__ = ["save_checkpoint", "read_meta", "optimizer_state_to_tensors", "optimizer_state_from_tensors",
           "load_weights", "list_checkpoints", "META_FILE"]

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
            model.save_pretrained(tmp / "text_encoder", safe_serialization=True)
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


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise StorageError(f"{path}: not a sage checkpoint (no {META_FILE})")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{meta_path}: unreadable ({exc.msg} at line {exc.lineno})") from None


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint (safetensors shards of ``text_encoder/``)."""
    folder = Path(path) / "text_encoder"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StorageError(f"{path}: no text_encoder/*.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return weights


def load_optimizer_state(path: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any] | None:
    file = Path(path) / OPTIM_FILE
    if "optimizer" not in meta or not file.is_file():
        return None
    return optimizer_state_from_tensors(load_file(str(file)), meta["optimizer"])


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``<run_dir>/checkpoints``, oldest step first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if (p / META_FILE).is_file()), key=lambda p: p.name)
