"""What a sweep spec needs beyond its models' own checks, read before Ray starts: the metric
registry's evaluators, the stages' settings and model folders, every TrainConfig the sweep can
produce (with its prompt files and run length), storage and tracking. All problems at once.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_core.defs import metrics as metric_registry
from sage_core.defs.config import TrainConfig
from sage_core.defs.errors import ConfigError, SageError, did_you_mean

from .paths import check_writable_folder, shown
from .robust_stage import stage_problems
from .space import Dimension, corner_values, enumerate_combinations
from .spec_model import IMAGE_METRICS, TEXT_METRICS, Objective, SweepSpec, base_train_config, is_uri, trial_config

__all__ = ["validate_spec", "spec_problems", "spec_error", "Coverage", "combination_count",
           "MAX_VALIDATED_COMBINATIONS"]

# Every combination is validated up to this many; beyond it a seeded sample of this many, and
# `sage sweep validate` says so.
MAX_VALIDATED_COMBINATIONS = 100_000


def spec_error(problems: list[str], *, name: str) -> ConfigError:
    """One error listing every problem of a spec."""
    return ConfigError([f"spec '{name}': {problems[0]}"] if len(problems) == 1 else
                       [f"spec '{name}' has {len(problems)} problems"] + problems)


def _objective_problems(i: int, obj: Objective, *, have_text_eval: bool) -> list[str]:
    """What is wrong with ``objectives[i]``: read against the metric registry."""
    where = f"objectives[{i}].metric={obj.metric!r}"
    entry = metric_registry.lookup(obj.metric)
    graded = ", ".join(metric_registry.objective_metrics("text"))
    if entry is None or (entry.fidelity == "image" and _looks_like_text(obj.metric)):
        hint = did_you_mean(obj.metric, [m.rstrip("_*") for m in TEXT_METRICS])
        return [f"{where}: no evaluator produces it{hint}; objectives that rank: {graded}"]
    if entry.fidelity == "image":
        return [f"{where}: an image-level metric; rungs use text-level metrics only; list it under "
                f"fidelity.image.metrics and use a text-level objective ({graded})"]
    if entry.direction == "target":
        return [f"{where}: best at {entry.target:g}, not at an extreme; use {entry.deviation!r}"]
    if obj.mode is not None and obj.mode != entry.mode:
        return [f"objectives[{i}].mode={obj.mode!r}: {obj.metric} is {entry.direction}d by the metric "
                f"registry; write mode: {entry.mode} or leave mode out"]
    if entry.evaluator.endswith("TextEvaluator") and not have_text_eval:
        return [f"{where}: produced by the text evaluator (sage_core.evaluation), which is not installed"]
    return []


def _metric_known(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1]) and len(name) > len(p) - 1)
               for p in patterns)


def _looks_like_text(name: str) -> bool:
    """'asr_txt' is a typo of asr_text, not the image ASR of an attack set called 'txt'."""
    names = [m.rstrip("_*") for m in TEXT_METRICS]
    return bool(did_you_mean(name, names, cutoff=0.85))


def _storage_problems(storage: str) -> list[str]:
    if is_uri(storage):
        try:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(storage)
            fs.get_file_info(path)
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            return [f"storage={storage!r}: not reachable ({type(exc).__name__}: {exc}); "
                    "use a local/shared folder or a URI pyarrow can open (s3://, gs://)"]
        return []
    try:  # validation must not create the sweep folder: what the check creates, it removes
        check_writable_folder(storage.removeprefix("file://"), option="storage", label=f"storage={shown(storage)!r}")
    except ConfigError as exc:
        return exc.problems
    return []


def _image_stage_problems(spec: SweepSpec) -> list[str]:
    """``fidelity.image``: its EvalConfig (``eval``), the inputs each requested metric needs, that
    the model folders/files exist, and that the SD UNet reads embeddings of the trials' width."""
    from sage_core.evaluation import build_eval_config
    from sage_core.evaluation.config import image_input_problems

    stage = spec.fidelity.image
    assert stage is not None
    where = "fidelity.image.eval"
    try:
        cfg = build_eval_config(stage.eval, where=where)
    except ConfigError as exc:
        return list(exc.problems)
    problems = [f"{where}.{p}" for p in image_input_problems(cfg, stage.metrics)]
    if cfg.device == "cuda" and not spec.resources.gpus:
        problems.append(f"{where}.device='cuda': needs resources.gpus > 0 (the image stage runs with the "
                        "trials' resources); or use device: auto")
    if problems:
        return problems
    try:
        base = base_train_config(spec)
    except SageError:
        return problems  # reported by the trial config check
    encoders = {str(base.get("encoder", TrainConfig.model_fields["encoder"].default))}
    encoders |= {str(v["encoder"]) for v in spec.variants.values() if "encoder" in v}
    cross = _unet_cross_dim(cfg.sd_model)
    for enc in sorted(encoders):
        width = _encoder_width(enc)
        if width is not None and cross is not None and width != cross:
            problems.append(f"{where}.sd_model={cfg.sd_model!r}: its UNet reads {cross}-dim text embeddings but "
                            f"the trials' encoder {enc!r} has hidden size {width}; the image stage needs the SD "
                            "text encoder or one trained from it (e.g. train.encoder: the same SD folder)")
    return problems


def _encoder_width(spec: str) -> int | None:
    try:
        from sage_core.encoders import resolve_encoder_path

        config = json.loads((resolve_encoder_path(spec)[0] / "config.json").read_text(encoding="utf-8"))
    except (SageError, OSError, ValueError):
        return None  # the trial config check reports an unusable encoder
    width = config.get("hidden_size", config.get("text_config", {}).get("hidden_size"))
    return int(width) if isinstance(width, int) else None


def _unet_cross_dim(sd_model: str | None) -> int | None:
    try:
        config = json.loads((Path(str(sd_model)).expanduser() / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    cross = config.get("cross_attention_dim")
    return int(cross) if isinstance(cross, int) else None


def validate_spec(spec: SweepSpec) -> Coverage:
    """Everything checkable before Ray starts beyond what the models check at construction (the
    metric registry, the stages' settings, every TrainConfig the sweep can produce, storage,
    tracking); raises one :class:`ConfigError` listing all problems. Returns which configurations
    were built (all, or a seeded sample past :data:`MAX_VALIDATED_COMBINATIONS`)."""
    problems, coverage = spec_problems(spec)
    if problems:
        raise spec_error(problems, name=spec.name)
    return coverage


def spec_problems(spec: SweepSpec) -> tuple[list[str], Coverage]:
    """Every problem :func:`validate_spec` reports, and what it covered."""
    have_text_eval = importlib.util.find_spec("sage_core.evaluation") is not None
    problems = [p for i, obj in enumerate(spec.objectives)
                for p in _objective_problems(i, obj, have_text_eval=have_text_eval)]
    problems += _stage_problems(spec)
    storage_root = None if is_uri(spec.storage) else Path(spec.storage).expanduser()
    coverage = Coverage(checked=0, total=combination_count(spec.dimensions()), sampled=False)
    try:
        base = base_train_config(spec, storage_root=storage_root)
    except SageError as exc:
        problems.append(str(exc))
    else:
        if not spec.too_many_trials():  # else the spec's own check says so, and building them all takes long
            trial_problems, coverage = _trial_config_problems(spec, base)
            problems += trial_problems
    problems += _storage_problems(spec.storage)
    problems += spec.tracking.problems(spec.storage)
    return problems, coverage


def _stage_problems(spec: SweepSpec) -> list[str]:
    """The robust / proximal / attack / image stages: their settings, metrics and inputs."""
    fidelity, problems = spec.fidelity, []
    if any(s is not None for s in (fidelity.robust, fidelity.proximal, fidelity.image, fidelity.attack)):
        problems += stage_problems(fidelity.robust, fidelity.proximal, attack=fidelity.attack_settings(),
                                   image_metrics=fidelity.image.metrics if fidelity.image else None)
    if fidelity.attack is not None and not problems:
        problems += _attack_room_problems(spec)
    if fidelity.image is not None:
        unknown = [m for m in fidelity.image.metrics if not _metric_known(m, IMAGE_METRICS)]
        problems += [f"fidelity.image.metrics: {m!r} is not an image-level metric ({', '.join(IMAGE_METRICS)})"
                     for m in unknown]
        if not unknown:
            problems += _image_stage_problems(spec)
    return problems


def _attack_room_problems(spec: SweepSpec) -> list[str]:
    """``fidelity.attack.n_tokens`` must leave room for a prompt in every trial's token sequence."""
    from sage_core.evaluation.attack import build_attack_config

    n_tokens = build_attack_config(spec.fidelity.attack_settings()).n_tokens
    try:
        base = base_train_config(spec)
    except SageError:
        return []  # reported by the trial config check
    # explicit lengths only (left out, the encoder's default applies: 77 for CLIP, 32 for others)
    lengths = {v["max_length"] for v in (base, *spec.variants.values()) if isinstance(v.get("max_length"), int)}
    if not lengths:
        return []
    room = min(lengths) - 3  # start and end tokens and at least one prompt token (sage_core.evaluation.attack)
    if n_tokens > room:
        return [f"fidelity.attack.n_tokens={n_tokens}: larger than the trials' {min(lengths)}-token sequences "
                f"allow (max_length); at most {room} (start, end and one prompt token must fit)"]
    return []


def _trial_config_problems(spec: SweepSpec, base: Mapping[str, Any]) -> tuple[list[str], Coverage]:
    """Build every TrainConfig the sweep can produce (or a seeded sample): each problem once, with
    the first combination that shows it."""
    bad: dict[str, dict[str, Any]] = {}
    lengths: dict[tuple[Any, ...], int | str] = {}
    last_rung = max(spec.fidelity.rungs or [0])
    workers = spec.resources.workers
    combos, coverage = _combinations_to_check(spec.dimensions())
    for combo in combos:
        try:
            cfg = trial_config(base, combo, spec.variants)
        except ConfigError as exc:
            for p in exc.problems:
                bad.setdefault(p, combo)
            continue
        length = _run_length(cfg, lengths)
        if isinstance(length, str):
            bad.setdefault(length, combo)
        elif last_rung and last_rung >= length[0]:
            bad.setdefault(f"fidelity.rungs: last rung {last_rung} must be below the run length "
                           f"{length[0]} steps ({length[1]})", combo)
        if cfg.batch_size % workers:
            bad.setdefault(f"batch_size={cfg.batch_size} must be a multiple of resources.workers={workers} "
                           "(each worker embeds an equal share of the batch)", combo)
    problems = []
    for p, combo in bad.items():
        where = f" (with {', '.join(f'{k}={v!r}' for k, v in combo.items())})" if combo else ""
        problems.append(f"trial config{where}: {p}")
    return problems, coverage


@dataclass(frozen=True)
class Coverage:
    """Which of the sweep's configurations validation built: all of them, or a seeded sample."""

    checked: int
    total: int
    sampled: bool

    def __str__(self) -> str:
        if self.sampled:
            return (f"validated a seeded sample of {self.checked:,} of its {self.total:,} configurations "
                    "(grid points x range ends x choices)")
        return f"validated all {self.total:,} configurations"


def combination_count(dims: Mapping[str, Dimension]) -> int:
    return math.prod(len(corner_values(d)) for d in dims.values())


def _combinations_to_check(dims: Mapping[str, Dimension]) -> tuple[Iterator[dict[str, Any]], Coverage]:
    """Every combination of corner values, or a seeded sample of MAX_VALIDATED_COMBINATIONS of them."""
    total = combination_count(dims)
    if total <= MAX_VALIDATED_COMBINATIONS:
        return enumerate_combinations(dims), Coverage(checked=total, total=total, sampled=False)
    names = list(dims)
    values = [corner_values(dims[n]) for n in names]
    rng = random.Random(0)

    def sample() -> Iterator[dict[str, Any]]:
        for _ in range(MAX_VALIDATED_COMBINATIONS):
            index = rng.randrange(total)
            combo = {}
            for name, vals in zip(names, values, strict=True):
                index, i = divmod(index, len(vals))
                combo[name] = vals[i]
            yield combo

    return sample(), Coverage(checked=MAX_VALIDATED_COMBINATIONS, total=total, sampled=True)


def _run_length(cfg: TrainConfig, cache: dict[tuple[Any, ...], Any]) -> tuple[int, str] | str:
    """``(steps, how)`` a trial with ``cfg`` runs, as the trainer plans it (epochs over the prompt
    pairs, capped by max_steps), or a problem reading its prompt files."""
    from sage_core.data import load_prompts

    key = (cfg.safe_prompts, cfg.unsafe_prompts, cfg.max_pairs)
    if key not in cache:
        try:
            cache[key] = max(len(load_prompts(cfg.safe_prompts, limit=cfg.max_pairs)),
                             len(load_prompts(cfg.unsafe_prompts, limit=cfg.max_pairs)))
        except SageError as exc:
            cache[key] = f"prompts: {exc}"
    pairs = cache[key]
    if isinstance(pairs, str):
        return pairs
    per_epoch = math.ceil(pairs / cfg.batch_size)
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None and cfg.max_steps <= total:
        return cfg.max_steps, f"max_steps={cfg.max_steps}"
    return total, (f"epochs={cfg.epochs} x {per_epoch} steps per epoch: {pairs} prompt pairs at "
                   f"batch_size={cfg.batch_size}")
