"""The image stage's Ray task: image metrics of one encoder (a survivor's checkpoint or the base).

Runs in its own process (``ray.remote(evaluate_encoder)``), on whatever node has the resources the
sweep's trials asked for.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from .spec import is_uri

__all__ = ["evaluate_encoder", "error_text"]


def _local_encoder(path: str, storage: str | None, work: Path) -> str:
    """``path`` itself when it is a local folder or an encoder spec such as ``minilm`` (``storage``
    None); a checkpoint on object storage is downloaded into ``work`` first."""
    if storage is None or Path(path).expanduser().is_dir() or not is_uri(storage):
        return path
    from ray.tune import Checkpoint  # lazy: ray (~0.7 s), only for running on Ray

    fs, _ = pafs.FileSystem.from_uri(storage)
    return Checkpoint(path, filesystem=fs).to_directory(str(work / "checkpoint"))


def evaluate_encoder(encoder: str, *, max_length: int | None, eval_values: Mapping[str, Any], cache_dir: str,
                     base_metrics: Mapping[str, float] | None, storage: str | None,
                     robust_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Image metrics of one encoder: a survivor's checkpoint (``storage``: the sweep folder it lives
    in, which may be object storage), or the base encoder spec (``storage`` None).

    ``robust_values``: ``fidelity.robust.image`` (:mod:`sage_core.robustness_image`): then also
    ``robust_asr*`` after a benign UNet LoRA fine-tune (``base_metrics["asr"]`` gives ``robust_asr_recovered``).

    Returns ``columns`` (metrics, ``base_*`` from ``base_metrics``, provenance), ``metrics``,
    ``generated`` (images not served by the cache) and ``wall_s``. Runs inside a Ray task.
    """
    from sage_core.encoders import load_encoder, quiet_hf_progress  # lazy: torch (~1 s), only for evaluating
    from sage_core.evaluation import ImageEvaluator, build_eval_config  # lazy: torch (~1 s)

    t0 = time.time()
    _quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="sage-image-stage-"))
    try:
        cfg = build_eval_config(dict(eval_values))
        iev = ImageEvaluator(cfg, cache_dir=cache_dir, progress=False)
        enc = load_encoder(_local_encoder(encoder, storage, work), max_length=max_length)
        with quiet_hf_progress():
            columns, _ = iev.evaluate_with_base(enc, base_metrics=dict(base_metrics or {}))
            if robust_values is not None:
                from sage_core.robustness_image import (  # lazy: torch
                    build_image_robust_config,
                    image_robustness_metrics,
                )

                cfg_ft = build_image_robust_config(robust_values, where="fidelity.robust.image")
                columns.update(image_robustness_metrics(enc, evaluator=iev, cfg=cfg_ft,
                                                        base_asr=(base_metrics or {}).get("asr")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    metrics = {k: v for k, v in columns.items() if k not in iev.info and not k.startswith("base_")}
    return {"columns": columns, "metrics": metrics, "generated": iev.generator.generated,
            "wall_s": time.time() - t0}


def _quiet_libraries() -> None:
    """Inside the task (its own process): library warnings and bars would flood the driver's log
    (Ray forwards worker output); errors still come through."""
    import diffusers  # lazy: diffusers (~2 s), only for image generation
    import transformers  # lazy: transformers (~1 s), only for loading a model

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def error_text(exc: BaseException) -> str:
    """One line: the error a task raised (its cause), as the stage reports it."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:500]
