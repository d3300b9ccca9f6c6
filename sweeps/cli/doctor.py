"""``sage doctor``: check (and warm up) what a run needs, without downloading anything."""

from __future__ import annotations

import typer

HELP = """Check the installation: torch, DeepSpeed (and build its small CPU op once, so
later runs start fast), the embedded encoder, the packaged prompt sets, Ray, DuckDB.
`make env` runs it; run it yourself after moving the environment."""


def register(app: typer.Typer) -> None:
    @app.command("doctor", help=HELP)
    def doctor(skip_deepspeed: bool = typer.Option(False, "--skip-deepspeed", help="Do not initialise DeepSpeed.")
               ) -> None:
        import importlib
        import time

        def ok(name: str, detail: str) -> None:
            typer.echo(f"  ok   {name:12s} {detail}")

        import torch

        ok("torch", f"{torch.__version__} (cuda: {torch.cuda.is_available()})")
        for mod in ("transformers", "diffusers", "deepspeed", "ray", "optuna", "duckdb", "pyarrow"):
            m = importlib.import_module(mod)
            ok(mod, getattr(m, "__version__", "?"))
        from sage_core.data import BUILTIN_PROMPT_SETS, load_prompts

        for name in BUILTIN_PROMPT_SETS:
            ok("prompts", f"{name}: {len(load_prompts(name))} rows")
        from sage_core.encoders import load_encoder

        enc = load_encoder("minilm")
        ok("encoder", f"minilm ({enc.hidden_size}-d, max_length {enc.max_length}) from {enc.source}")
        if not skip_deepspeed:
            t = time.perf_counter()
            from sage_core.distributed import deepspeed_probe

            deepspeed_probe()
            ok("deepspeed", f"engine initialised in {time.perf_counter() - t:.1f} s")
        typer.echo("all checks passed")
