"""What a sweep spec needs beyond its models' own checks, read before Ray starts: the metric
registry's evaluators, the stages' settings and model folders, every TrainConfig the sweep can
produce (built once by :mod:`sweeps.sweep_plan`, with its prompt files and run length), storage
and tracking. All problems at once.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.fs as pafs

from sage_core.defs import metrics as metric_registry
from sage_core.defs.config import TrainConfig
from sage_core.defs.errors import ConfigError, SageError, did_you_mean

from .paths import check_writable_folder, shown
from .robust_stage import stage_problems
from .spec_model import IMAGE_METRICS, TEXT_METRICS, Objective, SweepSpec, is_uri
from .sweep_plan import MAX_VALIDATED_COMBINATIONS, Coverage, SweepPlan, build_plan, combination_count

__all__ = ["validate_spec", "spec_problems", "spec_error", "Coverage", "combination_count",
           "MAX_VALIDATED_COMBINATIONS"]


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


def _image_stage_problems(spec: SweepSpec, plan: SweepPlan) -> list[str]:
    """``fidelity.image``: its EvalConfig (``eval``), the inputs each requested metric needs, that
    the model folders/files exist, and that the SD UNet reads embeddings of the trials' width."""
    from sage_core.evaluation import build_eval_config  # lazy: torch (~1 s), off `sage` start-up
    from sage_core.evaluation.config import image_input_problems  # lazy: torch (~1 s), off `sage` start-up

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
    if problems or not plan.base:  # no base values: reported by the plan
        return problems
    base = plan.base
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
        from sage_core.encoders import resolve_encoder_path  # lazy: torch (~1 s), off `sage` start-up

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
    were built (all, or a seeded sample past :data:`MAX_VALIDATED_COMBINATIONS`); the run takes
    the plan that built them (:func:`sweeps.sweep_plan.plan_of`)."""
    problems, plan = spec_problems(spec)
    if problems:
        raise spec_error(problems, name=spec.name)
    return plan.coverage


def spec_problems(spec: SweepSpec) -> tuple[list[str], SweepPlan]:
    """Every problem :func:`validate_spec` reports, and the plan that built the trial configs."""
    have_text_eval = importlib.util.find_spec("sage_core.evaluation") is not None
    plan = build_plan(spec)
    problems = [p for i, obj in enumerate(spec.objectives)
                for p in _objective_problems(i, obj, have_text_eval=have_text_eval)]
    problems += _stage_problems(spec, plan)
    problems += plan.problems
    problems += _storage_problems(spec.storage)
    problems += spec.tracking.problems(spec.storage)
    return problems, plan


def _stage_problems(spec: SweepSpec, plan: SweepPlan) -> list[str]:
    """The robust / proximal / attack / image stages: their settings, metrics and inputs."""
    fidelity, problems = spec.fidelity, []
    if any(s is not None for s in (fidelity.robust, fidelity.proximal, fidelity.image, fidelity.attack)):
        problems += stage_problems(fidelity.robust, fidelity.proximal, attack=fidelity.attack_settings(),
                                   image_metrics=fidelity.image.metrics if fidelity.image else None)
    if fidelity.attack is not None and not problems:
        problems += _attack_room_problems(spec, plan)
    if fidelity.image is not None:
        unknown = [m for m in fidelity.image.metrics if not _metric_known(m, IMAGE_METRICS)]
        problems += [f"fidelity.image.metrics: {m!r} is not an image-level metric ({', '.join(IMAGE_METRICS)})"
                     for m in unknown]
        if not unknown:
            problems += _image_stage_problems(spec, plan)
    return problems


def _attack_room_problems(spec: SweepSpec, plan: SweepPlan) -> list[str]:
    """``fidelity.attack.n_tokens`` must leave room for a prompt in every trial's token sequence."""
    from sage_core.evaluation.attack import build_attack_config  # lazy: torch (~1 s), off `sage` start-up

    n_tokens = build_attack_config(spec.fidelity.attack_settings()).n_tokens
    base = plan.base
    if not base:
        return []  # the base values fail: the plan reports that
    # explicit lengths only (left out, the encoder's default applies: 77 for CLIP, 32 for others)
    lengths = {v["max_length"] for v in (base, *spec.variants.values()) if isinstance(v.get("max_length"), int)}
    if not lengths:
        return []
    room = min(lengths) - 3  # start and end tokens and at least one prompt token (sage_core.evaluation.attack)
    if n_tokens > room:
        return [f"fidelity.attack.n_tokens={n_tokens}: larger than the trials' {min(lengths)}-token sequences "
                f"allow (max_length); at most {room} (start, end and one prompt token must fit)"]
    return []
