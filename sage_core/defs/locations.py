"""What a :class:`~sage_core.defs.config.TrainConfig` value may name besides a path: the built-in
prompt sets, the encoder specs, and the user-level cache folder.

Pure names and a ``config.json`` read: the config check asks them without loading a model or a
prompt file (``sage_core.data`` reads the sets, ``sage_core.clip_init`` builds ``sd14-init``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["BUILTIN_PROMPT_SETS", "SD14_INIT", "CACHE_ENV", "default_cache_dir", "encoder_is_clip"]

#: name -> file in ``sage_core/data/prompts`` (see its README for provenance and licence).
BUILTIN_PROMPT_SETS: dict[str, str] = {
    "copro-safe": "safe_prompts_copro_sexual.csv",
    "copro-unsafe": "unsafe_prompts_copro_sexual.csv",
    "coco": "coco_prompts.csv",
    "i2p-sexual": "i2p_sexual_prompts.csv",
    "sneaky": "sneaky_prompts.csv",
    # written by this project (Apache-2.0; see the folder's README)
    "sd-controls": "sd_controls.csv",
    "sd-other-harm": "sd_other_harm.csv",
    "sd-nudity-check": "sd_nudity_check.csv",
    "sd-benign-check": "sd_benign_check.csv",
}

#: The encoder spec of SD v1.4's text-encoder shape with random weights (``sage_core.clip_init``).
SD14_INIT = "sd14-init"

#: Environment variable naming the user-level cache folder (default ``~/.cache/sage-sweeps``).
CACHE_ENV = "SAGE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$SAGE_CACHE_DIR`` if set (and not empty), else ``~/.cache/sage-sweeps``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sage-sweeps").expanduser()


def encoder_is_clip(spec: str) -> bool | None:
    """Is encoder ``spec`` a CLIP text encoder? Reads only its ``config.json``; None when unknown
    (no such folder, unreadable config: the encoder check reports those)."""
    if spec == SD14_INIT:
        return True
    if spec == "minilm":
        return False
    path = Path(spec).expanduser()
    for config in (path / "text_encoder" / "config.json", path / "config.json"):
        if config.is_file():
            try:
                model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
            except (OSError, ValueError, AttributeError):
                return None
            return model_type in ("clip_text_model", "clip")
    return None
