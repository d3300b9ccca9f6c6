"""``doctor_checks``: what a run needs, checked (and warmed up) without downloading anything; the
Python API of ``sage doctor``."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator

from sage_core.data import load_prompts
from sage_core.defs.locations import BUILTIN_PROMPT_SETS

__all__ = ["doctor_checks", "LIBRARIES"]

LIBRARIES = ("transformers", "diffusers", "deepspeed", "ray", "optuna", "duckdb", "pyarrow")


def doctor_checks(*, skip_deepspeed: bool = False) -> Iterator[tuple[str, str]]:
    """``(name, detail)`` per passed check, in order; a failing check raises. The DeepSpeed check
    initialises an engine through the public :func:`sage_core.distributed.deepspeed_probe` (which
    builds its small CPU op once)."""
    import torch  # lazy: torch (~1 s), off `sage` start-up

    yield "torch", f"{torch.__version__} (cuda: {torch.cuda.is_available()})"
    for name in LIBRARIES:
        yield name, getattr(importlib.import_module(name), "__version__", "?")

    for name in BUILTIN_PROMPT_SETS:
        yield "prompts", f"{name}: {len(load_prompts(name))} rows"
    from sage_core.encoders import load_encoder  # lazy: torch (~1 s), off `sage` start-up

    enc = load_encoder("minilm")
    yield "encoder", f"minilm ({enc.hidden_size}-d, max_length {enc.max_length}) from {enc.source}"
    if not skip_deepspeed:
        from sage_core.distributed import deepspeed_probe  # lazy: torch (~1 s), off `sage` start-up

        t = time.perf_counter()
        deepspeed_probe()
        yield "deepspeed", f"engine initialised in {time.perf_counter() - t:.1f} s"
