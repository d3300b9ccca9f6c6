"""``sage train``: one SAGE/DES run from a preset or YAML file, with ``--set`` overrides."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from sage_core.defs.config import load_config, parse_overrides
from sage_core.defs.errors import ConfigError
from sweeps.paths import check_path, output_dir

HELP = """Train an aligned text encoder with SAGE (or DES) on a DeepSpeed engine.

With no options this runs the shipped `quickstart` preset: the embedded all-MiniLM-L6-v2
encoder, the packaged CoPro prompts, 200 steps at batch 16 (a few minutes on a laptop CPU).
`--preset paper` is the official SAGE run (point `encoder` at a local Stable Diffusion
folder); `--preset des` the official DES run.

Precedence: --set > --config/--preset > TrainConfig defaults (the official SAGE values).

Examples:

\b
  sage train
  sage train --preset paper --set encoder=/models/sd-v1-4 --out runs/paper
  sage train --config my.yaml --set lambda_esp=1.0 --set local_k=10

Writes OUT/checkpoints/step_NNNNNN/ (text_encoder/ + tokenizer/ loadable with
CLIPTextModel.from_pretrained / diffusers, optimizer.safetensors, meta.json, metrics.json)
and OUT/log.jsonl.
"""


def register(app: typer.Typer) -> None:
    @app.command("train", help=HELP, no_args_is_help=False)
    def train_cmd(
        preset: str | None = typer.Option(
            None, "--preset", "-p", help="Shipped preset: quickstart (default when no --config), paper, des."),
        config: Path | None = typer.Option(
            None, "--config", "-c", help="YAML file of TrainConfig keys, e.g. `lambda_esp: 1.0`."),
        overrides: list[str] = typer.Option(
            [], "--set", "-s", help="Override one key, KEY=VALUE (repeatable), e.g. --set lambda_lsa=0.2."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output folder (default runs/train-<preset>-<time>)."),
        resume: Path | None = typer.Option(
            None, "--resume", help="Continue from a checkpoint folder (OUT/checkpoints/step_N)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (for logs)."),
        show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
    ) -> None:
        config = check_path(config, option="--config") if config is not None else None
        resume = check_path(resume, option="--resume") if resume is not None else None
        default_preset = preset is None and config is None
        if default_preset:
            preset = "quickstart"
        cfg = load_config(preset=preset, config_file=config, overrides=parse_overrides(overrides))
        # said once every input is checked, so that a refusal is one line
        default_note = ("no --preset/--config given: running the shipped 'quickstart' preset "
                        "(--preset paper is the official SAGE run)") if default_preset else None
        if show_config:
            if default_note:
                typer.echo(default_note, err=True)
            typer.echo(json.dumps(cfg.to_dict(), indent=2))
            return
        if resume is not None:
            from sage_core.checkpoint import check_checkpoint  # lazy: torch (~1 s), off `sage` start-up

            if not resume.is_dir():
                raise ConfigError(f"--resume {resume}: no such checkpoint folder")
            check_checkpoint(resume)  # meta.json and safetensors headers, before any model loads
        name = preset if preset is not None else config.stem if config is not None else "train"
        out = out or Path("runs") / f"train-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        with output_dir(out, option="--out") as folder:  # made before the model loads
            if default_note:
                typer.echo(default_note, err=True)
            from sage_core.trainer import Trainer  # lazy: torch (~1 s), off `sage` start-up

            result = Trainer(cfg, out_dir=folder, resume_from=resume, progress=not no_progress).fit()
        shown = {k: v for k, v in result.metrics.items() if not k.startswith("base_")}
        typer.echo(f"done: {result.step} steps in {result.wall_s:.0f} s; "
                   f"concept_guidance_scale used = {result.concept_guidance_scale:.2f}")
        for key in sorted(shown):
            typer.echo(f"  {key:28s} {shown[key]:.4f}")
        typer.echo(f"checkpoint: {result.final_checkpoint}")
