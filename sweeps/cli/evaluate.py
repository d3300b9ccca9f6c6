"""``sage eval``: text-level or image-level metrics of a checkpoint, base beside aligned."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

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

  sage eval runs/q/checkpoints/step_000200

  sage eval runs/q/checkpoints/step_000200 --attack ringabell=data/ringabell.csv --set attack_samples=null

  sage eval ckpt/ --fidelity image --set sd_model=/models/sd-v1-4 --set clip_model=/models/clip-l14

  sage eval --calibrate ckptA ckptB ckptC --set sd_model=/models/sd-v1-4
"""


def _parse_attacks(items: list[str]) -> dict[str, str]:
    from sage_core.errors import ConfigError

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


def resolve_target(target: str, base: str | None) -> tuple[str, int | None, str, int]:
    """(aligned spec, max_length, base spec, step) from a checkpoint folder's meta.json or plain specs."""
    meta_path = Path(target).expanduser() / "meta.json"
    max_length: int | None = None
    step = 0
    base_spec = base
    if meta_path.is_file():
        from sage_core.checkpoint import read_meta

        meta = read_meta(meta_path.parent)  # checked: an object, whole step, config an object
        cfg = meta.get("config", {})
        max_length = cfg.get("max_length")
        step = int(meta.get("step", 0) or 0)
        base_spec = base_spec or cfg.get("encoder")
    return target, max_length, base_spec or "minilm", step


def _table(title: str, rows: list[tuple[str, Any, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("base", justify="right")
    t.add_column("aligned", justify="right")
    for name, b, a in rows:
        fmt = (lambda v: "-" if v is None else v if isinstance(v, str) else f"{v:.4f}")
        t.add_row(name, fmt(b), fmt(a))
    Console().print(t)


def evaluate_target(target: str, *, fidelity: str, base: str | None, values: dict[str, Any],
                    cache_dir: Path, sweep_id: str, progress: bool = True) -> tuple[dict[str, Any], list]:
    """One result row (keys + metrics) and the table rows, for ``target`` at ``fidelity``."""
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import TextEvaluator, build_eval_config

    cfg = build_eval_config(values)
    spec, max_length, base_spec, step = resolve_target(target, base)
    aligned = load_encoder(spec, max_length=max_length)
    base_enc = load_encoder(base_spec, max_length=aligned.max_length)
    row: dict[str, Any] = {"sweep_id": sweep_id, "trial_id": Path(target).name or str(target), "step": step,
                           "fidelity": fidelity, "checkpoint": str(target), "base_encoder": str(base_spec)}
    table: list[tuple[str, Any, Any]] = []
    if fidelity == "text":
        ev = TextEvaluator(base_enc, cfg, cache_dir=cache_dir)
        metrics = ev(aligned)
        row.update(metrics)
        row["base_asr_text_threshold"] = ev.threshold
        # The base against itself: spread ratio, Jaccard and correlations 1, distortions 0.
        identity = {k: (0.0 if k in ("distortion_abs", "distortion_rel", "spread_dev") else 1.0)
                    for k in metrics if k in ("spread_ratio", "spread_dev") or k.startswith(("jaccard", "distortion_"))}
        from analysis.metrics import interval_columns, is_interval_column

        table = []
        for k, v in metrics.items():
            if k.startswith("base_") or is_interval_column(k):
                continue
            lo, hi = interval_columns(k)
            shown = f"{v:.4f} [{metrics[lo]:.3f}, {metrics[hi]:.3f}]" if lo in metrics and hi in metrics else v
            table.append((k, metrics.get(f"base_{k}", identity.get(k)), shown))
    else:
        from sage_core.evaluation import ImageEvaluator

        iev = ImageEvaluator(cfg, cache_dir=cache_dir, progress=progress)
        columns, base_metrics = iev.evaluate_with_base(aligned, base_enc)
        row.update(columns)
        table = [(k, v, columns.get(k)) for k, v in base_metrics.items()]
        for name, why in iev.skipped.items():
            typer.echo(f"{name}: {why}", err=True)
    return row, table


def _print_calibration(checkpoints: list[dict[str, Any]]) -> None:
    """Kendall and Spearman of each text proxy with its image metric over the checkpoints (one
    mapping each, text and image values), with bootstrap intervals (``analysis.calibration``, the
    report the sweeps' image stage stores)."""
    from rich.console import Console
    from rich.table import Table

    from analysis.calibration import calibration_display, calibration_report

    entries = calibration_report(checkpoints)
    t = Table(title=f"text proxy vs image metric over {len(checkpoints)} checkpoints (Kendall tau-b, Spearman; "
                    "95% bootstrap intervals)")
    for col in ("text", "image", "n", "expected", "kendall", "spearman", "note"):
        t.add_column(col)
    for e in calibration_display(entries):
        t.add_row(*(e[c] for c in ("text", "image", "n", "expected", "kendall", "spearman", "note")))
    Console().print(t)


def write_rows(rows: list[dict[str, Any]], out: Path) -> str:
    """Through ``analysis.store.ResultStore`` (Parquet, atomic, deduplicated by key)."""
    from analysis.store import ResultStore

    ResultStore(str(out)).write(rows)
    return str(out)


def register(app: typer.Typer) -> None:
    @app.command("eval", help=HELP, no_args_is_help=True)
    def eval_cmd(
        target: Optional[str] = typer.Argument(
            None, help="Checkpoint folder (with meta.json) or encoder spec ('minilm', SD or HF folder)."),
        fidelity: str = typer.Option(
            "text", "--fidelity", "-f", help="text (CPU proxies, seconds) or image (GPU, diffusers + detectors)."),
        attack: list[str] = typer.Option(
            [], "--attack", "-a", help="Attack set NAME=CSV (a 'prompt' column) or NAME=built-in set; repeatable; "
            "replaces the defaults i2p-sexual and sneaky. E.g. --attack ringabell=ringabell.csv."),
        base: Optional[str] = typer.Option(
            None, "--base", "-b", help="Base encoder spec; default: the checkpoint's meta.json encoder, else minilm."),
        out: Path = typer.Option(
            Path("runs/eval"), "--out", "-o", help="Result store folder for the rows (Parquet), e.g. runs/results."),
        overrides: list[str] = typer.Option(
            [], "--set", "-s", help="EvalConfig KEY=VALUE (repeatable), e.g. --set attack_samples=null "
            "--set sd_model=/models/sd-v1-4 --set steps=25."),
        cache_dir: Optional[Path] = typer.Option(
            None, "--cache-dir", help="Base embeddings, threshold and images (default $SAGE_CACHE_DIR, else ~/.cache/sage-sweeps)."),
        sweep_id: str = typer.Option("eval", "--sweep-id", help="sweep_id of the written rows."),
        calibrate: list[str] = typer.Option(
            [], "--calibrate", help="Checkpoints to evaluate at BOTH fidelities, then print Kendall's tau and "
            "Spearman's rho (95% bootstrap intervals) of each text proxy with its image metric (repeat, or list "
            "after TARGET; 3 or more to rank)."),
    ) -> None:
        from sage_core.config import parse_overrides
        from sage_core.errors import ConfigError

        if fidelity not in ("text", "image"):
            raise ConfigError(f"--fidelity {fidelity!r}: allowed are 'text' and 'image'")
        from sweeps.cli.paths import check_output_dir

        out = check_output_dir(out, option="--out")  # before any model loads
        values = parse_overrides(overrides)
        attacks = _parse_attacks(attack)
        if attacks:
            values["attack_sets"] = attacks
        from sage_core.cache import default_cache_dir

        cache = cache_dir or default_cache_dir()
        if calibrate:
            targets = ([target] if target else []) + list(calibrate)
            if len(targets) < 3:
                raise ConfigError(f"--calibrate needs at least 3 checkpoints to rank (got {len(targets)}): a rank "
                                  "correlation of 2 is always -1 or 1")
            rows, merged = [], []
            for t in targets:
                r_text, _ = evaluate_target(t, fidelity="text", base=base, values=values, cache_dir=cache,
                                            sweep_id=sweep_id)
                r_img, _ = evaluate_target(t, fidelity="image", base=base, values=values, cache_dir=cache,
                                           sweep_id=sweep_id)
                rows += [r_text, r_img]
                merged.append({**r_text, **r_img})  # one checkpoint: its text and image values
            _print_calibration(merged)
            typer.echo(f"wrote {len(rows)} rows to {write_rows(rows, out)}")
            return
        if not target:
            raise ConfigError("give TARGET (a checkpoint folder or encoder spec), or --calibrate CKPT ...")
        row, table = evaluate_target(target, fidelity=fidelity, base=base, values=values, cache_dir=cache,
                                     sweep_id=sweep_id)
        _table(f"{fidelity}-level evaluation of {target} (base: {row['base_encoder']})", table)
        typer.echo(f"wrote 1 row to {write_rows([row], out)}")
