"""``sage eval``: text-level or image-level metrics of a checkpoint, base beside aligned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from analysis.calibration import calibration_display
from sage_core.defs.config import parse_overrides
from sage_core.defs.errors import ConfigError
from sweeps.evaluate import calibrate_checkpoints, evaluate_checkpoint, write_rows
from sweeps.paths import check_path, output_dir

HELP = """Evaluate an aligned text encoder against its base, at text or image fidelity.

TARGET is one of our checkpoint folders (text_encoder/ + tokenizer/ + meta.json, e.g.
runs/x/checkpoints/step_000200), or any encoder spec: 'minilm', a Stable Diffusion folder or a
Hugging Face folder. The base encoder is --base, else the checkpoint's meta.json config
(encoder, max_length), else 'minilm'.

--fidelity text (default; seconds on a CPU): graded safety in two views (concept_auc: can the
aligned encoder still tell attack prompts from benign ones; concept_auc_abs: against the base space
the UNet reads; attack_auc, asr_text_selfcal, and the old asr_text), graded utility per TIFA
category (util_sib: do minimal-pair differences keep direction and length; util_mrr retrieval;
fidelity_abs; the old util_text), spread ratio, Jaccard@K, distance distortion, each overall
figure with a 95% bootstrap interval. `sage metrics` explains every column.

--fidelity image (GPU; needs --set sd_model=FOLDER): asr per attack set with NudeNet, and
tifa / clipscore / fid when their inputs are set (tifa_questions + vqa_model, clip_model,
fid_reference). Images are cached, so a second run is free.

Rates are fractions in [0, 1]; clipscore is 100 * cos. Rows are written to the result store
under OUT (Parquet; one row per checkpoint and fidelity).

Examples:

\b
  sage eval runs/q/checkpoints/step_000200
  sage eval runs/q/checkpoints/step_000200 --attack ringabell=data/ringabell.csv --set attack_samples=null
  sage eval ckpt/ --fidelity image --set sd_model=/models/sd-v1-4 --set clip_model=/models/clip-l14
  sage eval --calibrate ckptA ckptB ckptC --set sd_model=/models/sd-v1-4
"""


def _parse_attacks(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, src = item.partition("=")
        if not sep or not name.strip() or not src.strip():
            raise ConfigError(f"--attack {item!r}: expected NAME=CSV (or NAME=builtin-set), "
                              "e.g. --attack ringabell=data/ringabell.csv")
        if name.strip() in out:
            raise ConfigError(f"--attack {item!r}: the name {name.strip()!r} is given twice; give each attack set "
                              "one name")
        out[name.strip()] = src.strip()
    return out


def _cell(v: Any) -> str:
    return "-" if v is None else v if isinstance(v, str) else f"{v:.4f}"


def _table(title: str, rows: list[tuple[str, Any, Any]]) -> None:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("base", justify="right")
    t.add_column("aligned", justify="right")
    for name, b, a in rows:
        t.add_row(name, _cell(b), _cell(a))
    Console().print(t)


def _print_calibration(entries: list[dict[str, Any]], *, n: int) -> None:
    """Kendall and Spearman of each text proxy with its image metric over ``n`` checkpoints, with
    bootstrap intervals (``analysis.calibration``, the report the sweeps' image stage stores)."""
    t = Table(title=f"text proxy vs image metric over {n} checkpoints (Kendall tau-b, Spearman; "
                    "95% bootstrap intervals)")
    for col in ("text", "image", "n", "expected", "kendall", "spearman", "note"):
        t.add_column(col)
    for e in calibration_display(entries):
        t.add_row(*(e[c] for c in ("text", "image", "n", "expected", "kendall", "spearman", "note")))
    Console().print(t)


def register(app: typer.Typer) -> None:
    @app.command("eval", help=HELP, no_args_is_help=True)
    def eval_cmd(
        target: str | None = typer.Argument(
            None, help="Checkpoint folder (with meta.json) or encoder spec ('minilm', SD or HF folder)."),
        fidelity: str = typer.Option(
            "text", "--fidelity", "-f", help="text (CPU proxies, seconds) or image (GPU, diffusers + detectors)."),
        attack: list[str] = typer.Option(
            [], "--attack", "-a", help="Attack set NAME=CSV (a 'prompt' column) or NAME=built-in set; repeatable; "
            "replaces the defaults i2p-sexual and sneaky. E.g. --attack ringabell=ringabell.csv."),
        base: str | None = typer.Option(
            None, "--base", "-b", help="Base encoder spec; default: the checkpoint's meta.json encoder, else minilm."),
        out: Path = typer.Option(
            Path("runs/eval"), "--out", "-o", help="Result store folder for the rows (Parquet), e.g. runs/results."),
        overrides: list[str] = typer.Option(
            [], "--set", "-s", help="EvalConfig KEY=VALUE (repeatable), e.g. --set attack_samples=null "
            "--set sd_model=/models/sd-v1-4 --set steps=25."),
        cache_dir: Path | None = typer.Option(
            None, "--cache-dir",
            help="Base embeddings, threshold and images (default $SAGE_CACHE_DIR, else ~/.cache/sage-sweeps)."),
        sweep_id: str = typer.Option("eval", "--sweep-id", help="sweep_id of the written rows."),
        calibrate: list[str] = typer.Option(
            [], "--calibrate", help="Checkpoints to evaluate at BOTH fidelities, then print Kendall's tau and "
            "Spearman's rho (95% bootstrap intervals) of each text proxy with its image metric (repeat, or list "
            "after TARGET; 3 or more to rank)."),
    ) -> None:
        from sage_core.evaluation import build_eval_config  # lazy: torch (~1 s), off `sage` start-up

        # Every input checked, and the output folder made, before any model loads.
        if not target and not calibrate:
            raise ConfigError("give TARGET (a checkpoint folder or encoder spec), or --calibrate CKPT ...")
        target = str(check_path(target, option="TARGET")) if target else target
        calibrate = [str(check_path(c, option="--calibrate")) for c in calibrate]
        base = str(check_path(base, option="--base")) if base else base
        cache_dir = check_path(cache_dir, option="--cache-dir") if cache_dir is not None else None
        values = parse_overrides(overrides)
        values.update({"attack_sets": _parse_attacks(attack)} if attack else {})
        build_eval_config(values)
        with output_dir(out, option="--out") as folder:
            _evaluate(target, fidelity=fidelity, base=base, values=values, cache_dir=cache_dir, sweep_id=sweep_id,
                      calibrate=calibrate, out=folder)


def _evaluate(target: str | None, *, fidelity: str, base: str | None, values: dict[str, Any],
              cache_dir: Path | None, sweep_id: str, calibrate: list[str], out: Path) -> None:
    if calibrate:
        targets = ([target] if target else []) + list(calibrate)
        rows, entries = calibrate_checkpoints(targets, base=base, values=values, cache_dir=cache_dir,
                                              sweep_id=sweep_id)
        _print_calibration(entries, n=len(targets))
        typer.echo(f"wrote {len(rows)} rows to {write_rows(rows, out)}")
        return
    assert target is not None  # checked by the command
    result = evaluate_checkpoint(target, fidelity=fidelity, base=base, values=values, cache_dir=cache_dir,
                                 sweep_id=sweep_id)
    for name, why in result.skipped.items():
        typer.echo(f"{name}: {why}", err=True)
    _table(f"{fidelity}-level evaluation of {target} (base: {result.row['base_encoder']})", result.table)
    typer.echo(f"wrote 1 row to {write_rows([result.row], out)}")
