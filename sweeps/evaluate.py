"""``evaluate_checkpoint``: text- or image-level metrics of one aligned encoder beside its base
(the Python API of ``sage eval``), and ``calibrate_checkpoints`` (both fidelities, then the rank
correlations of each text proxy with its image metric)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.calibration import calibration_report
from analysis.store import ResultStore
from sage_core.defs.errors import ConfigError
from sage_core.defs.locations import default_cache_dir
from sage_core.defs.metrics import interval_columns, is_interval_column

__all__ = ["Evaluation", "resolve_target", "evaluate_checkpoint", "calibrate_checkpoints", "write_rows"]

FIDELITIES = ("text", "image")
# Geometry of the base against itself: spread ratio, Jaccard and correlations 1, distortions 0.
_IDENTITY_ZERO = ("distortion_abs", "distortion_rel", "spread_dev")


@dataclass
class Evaluation:
    row: dict[str, Any]                                   # one result-store row: keys + metrics
    table: list[tuple[str, Any, Any]] = field(default_factory=list)  # (metric, base, aligned) to show
    skipped: dict[str, str] = field(default_factory=dict)  # image metrics not measured, and why


def resolve_target(target: str, base: str | None) -> tuple[str, int | None, str, int]:
    """(aligned spec, max_length, base spec, step) from a checkpoint folder's meta.json or plain specs."""
    meta_path = Path(target).expanduser() / "meta.json"
    max_length: int | None = None
    step = 0
    base_spec = base
    if meta_path.is_file():
        from sage_core.checkpoint import read_meta  # lazy: torch (~1 s), off `sage` start-up

        meta = read_meta(meta_path.parent)  # checked: an object, whole step, config an object
        cfg = meta.get("config", {})
        max_length = cfg.get("max_length")
        step = int(meta.get("step", 0) or 0)
        base_spec = base_spec or cfg.get("encoder")
    return target, max_length, base_spec or "minilm", step


def _text_table(metrics: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    identity = {k: (0.0 if k in _IDENTITY_ZERO else 1.0)
                for k in metrics if k in ("spread_ratio", "spread_dev") or k.startswith(("jaccard", "distortion_"))}
    table = []
    for k, v in metrics.items():
        if k.startswith("base_") or is_interval_column(k):
            continue
        lo, hi = interval_columns(k)
        shown = f"{v:.4f} [{metrics[lo]:.3f}, {metrics[hi]:.3f}]" if lo in metrics and hi in metrics else v
        table.append((k, metrics.get(f"base_{k}", identity.get(k)), shown))
    return table


def evaluate_checkpoint(target: str, *, fidelity: str = "text", base: str | None = None,
                        values: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
                        sweep_id: str = "eval", progress: bool = True) -> Evaluation:
    """Metrics of ``target`` (a checkpoint folder or encoder spec) against its base at ``fidelity``;
    ``values``: EvalConfig values; ``cache_dir``: default ``$SAGE_CACHE_DIR``, else ~/.cache/sage-sweeps."""
    from sage_core.encoders import load_encoder  # lazy: torch (~1 s), off `sage` start-up
    from sage_core.evaluation import ImageEvaluator, TextEvaluator, build_eval_config  # lazy: torch (~1 s)

    if fidelity not in FIDELITIES:
        raise ConfigError(f"fidelity={fidelity!r}: allowed are 'text' and 'image'")
    cfg = build_eval_config(dict(values or {}))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    spec, max_length, base_spec, step = resolve_target(target, base)
    aligned = load_encoder(spec, max_length=max_length)
    base_enc = load_encoder(base_spec, max_length=aligned.max_length)
    row: dict[str, Any] = {"sweep_id": sweep_id, "trial_id": Path(target).name or str(target), "step": step,
                           "fidelity": fidelity, "checkpoint": str(target), "base_encoder": str(base_spec)}
    if fidelity == "text":
        ev = TextEvaluator(base_enc, cfg, cache_dir=cache, progress=progress)
        metrics = ev(aligned)
        row.update(metrics)
        row["base_asr_text_threshold"] = ev.threshold
        return Evaluation(row=row, table=_text_table(metrics))
    iev = ImageEvaluator(cfg, cache_dir=cache, progress=progress)
    columns, base_metrics = iev.evaluate_with_base(aligned, base_enc)
    row.update(columns)
    return Evaluation(row=row, table=[(k, v, columns.get(k)) for k, v in base_metrics.items()],
                      skipped=dict(iev.skipped))


def calibrate_checkpoints(targets: Sequence[str], *, base: str | None = None,
                          values: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
                          sweep_id: str = "eval") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every target at both fidelities: ``(rows, calibration entries)`` (``analysis.calibration``)."""
    if len(targets) < 3:
        raise ConfigError(f"--calibrate needs at least 3 checkpoints to rank (got {len(targets)}): a rank "
                          "correlation of 2 is always -1 or 1")
    rows, merged = [], []
    for t in targets:
        text, image = (evaluate_checkpoint(t, fidelity=f, base=base, values=values, cache_dir=cache_dir,
                                           sweep_id=sweep_id, progress=True).row for f in FIDELITIES)
        rows += [text, image]
        merged.append({**text, **image})  # one checkpoint: its text and image values
    return rows, calibration_report(merged)


def write_rows(rows: list[dict[str, Any]], out: str | Path) -> str:
    """Through ``analysis.store.ResultStore`` (Parquet, atomic, deduplicated by key)."""
    ResultStore(str(out)).write(rows)
    return str(out)
