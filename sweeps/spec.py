"""``SweepSpec``: one sweep as data (YAML in ``sweeps/specs/``), validated before Ray starts.

A spec may inherit another with ``include: <name or path>`` (alias ``base:``): mappings merge
key by key, the child wins, and ``space`` / ``objectives`` / lists are replaced as a whole, so an
ablation lists only what it varies. Precedence: ``--set`` > the spec file > what it includes >
the defaults below. ``validate_spec`` reports every problem at once, each naming the field, the
value and what is allowed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal, Mapping

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from analysis import metrics as metric_registry
from sage_core.config import TrainConfig, load_config, read_yaml_mapping
from sage_core.errors import ConfigError, FieldProblem, SageError, did_you_mean, format_validation_error
from sage_core.safe_yaml import load_yaml_text
from sage_core.strict_values import check_value

from .robust_stage import stage_problems
from .space import Dimension, Grid, SpaceDimension, corner_values, enumerate_combinations, grid_size

__all__ = ["SweepSpec", "Objective", "SearchConfig", "SchedulerConfig", "FidelityPlan", "ImageStage",
           "Resources", "Tracking", "SPECS_DIR", "resolve_spec_path", "load_spec", "validate_spec", "shipped_specs",
           "TEXT_METRICS", "IMAGE_METRICS", "apply_overrides", "base_train_config", "trial_config",
           "is_uri", "MAX_VALIDATED_COMBINATIONS", "VARIANT", "trial_values", "describe", "Coverage",
           "spec_from_text", "DEFAULT_MAX_TRIALS"]

SPECS_DIR = Path(__file__).parent / "specs"
VARIANT = "variant"
# Every combination is validated up to this many; beyond it a seeded sample of this many, and
# `sage sweep validate` says so.
MAX_VALIDATED_COMBINATIONS = 100_000
DEFAULT_MAX_TRIALS = 100_000

# Metrics each evaluator produces; '*' = any suffix (per attack set / per category).
# What rungs may rank by (text level, geometry, training losses) and what only the image stage
# produces: both read from the metric registry, the one place that names a metric.
TEXT_METRICS = tuple(m.name + ("*" if m.family else "") for m in metric_registry.REGISTRY.values()
                     if m.fidelity in ("text", "geometry", "train"))
IMAGE_METRICS = tuple(m.name + ("*" if m.family else "") for m in metric_registry.REGISTRY.values()
                      if m.fidelity == "image")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        """Booleans are not numbers; an empty storage is not a path (NaN/inf: allow_inf_nan=False)."""
        name = info.field_name or ""
        try:
            return check_value(name, value, annotation=cls.model_fields[name].annotation, path=name == "storage",
                               named=False)
        except ValueError as exc:
            raise FieldProblem(str(exc)) from None


# TrainConfig fields a sweep sets itself (fidelity.text_every) or per machine (cache_dir): never varied.
_SWEEP_OWNED = ("cache_dir", "eval_every")


def _varied_field(name: str) -> str:
    """A key of ``space`` or of a variant: a TrainConfig field a sweep may vary."""
    if name not in TrainConfig.model_fields or name in _SWEEP_OWNED:
        raise FieldProblem(f"not a TrainConfig field that a sweep may vary{did_you_mean(name, TrainConfig.model_fields)}")
    return name


def _train_field(name: str) -> str:
    """A key of ``train``: a TrainConfig field, but not the one the sweep sets."""
    if name not in TrainConfig.model_fields:
        raise FieldProblem(f"unknown TrainConfig field{did_you_mean(name, TrainConfig.model_fields)}")
    if name == "eval_every":
        raise FieldProblem("set by the sweep from fidelity.text_every; remove it")
    return name


# Validation context under which the checks across fields wait (load_spec then runs them itself, so
# that they are reported together with the field problems; see _salvage).
_DEFER = {"defer_cross_field_checks": True}


def _raise_unless_deferred(problems: list[str], info: ValidationInfo) -> None:
    if problems and not (info.context or {}).get("defer_cross_field_checks"):
        raise ValueError(" | ".join(problems))


VariedField = Annotated[str, AfterValidator(_varied_field)]
TrainField = Annotated[str, AfterValidator(_train_field)]


class Objective(_Strict):
    metric: str = Field(description="a metric of the registry, e.g. concept_auc, util_sib (see `sage metrics`)")
    mode: Literal["min", "max"] | None = Field(
        None, description="optional: the registry's direction; written here it must agree with it")

    @property
    def resolved_mode(self) -> str:
        return self.mode or metric_registry.mode(self.metric)


class SearchConfig(_Strict):
    algorithm: Literal["grid", "random", "tpe", "nsga2"] = Field(
        "grid", description="grid/random through Tune's BasicVariantGenerator; tpe/nsga2 through "
        "Optuna (multi-objective)")
    num_samples: int = Field(1, ge=1, description="grid: repeats of the whole grid; others: trials")
    seed: int | None = Field(0, ge=0, description="sampler seed (Optuna) / Tune random seed")
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    max_trials: int = Field(DEFAULT_MAX_TRIALS, ge=1, description="refuse a sweep of more trials than this "
                            "(grid: grid points x num_samples); raise it on purpose for a larger sweep")


class SchedulerConfig(_Strict):
    kind: Literal["pareto_sh", "fifo"] = Field(
        "pareto_sh", description="pareto_sh: Pareto-aware successive halving at the rungs; fifo: none")
    eta: int = Field(3, ge=2, description="keep the top 1/eta (non-dominated rank, then crowding) per rung")


class ImageStage(_Strict):
    unknown_key_hint: ClassVar[str] = "evaluation settings go under fidelity.image.eval, e.g. fidelity.image.eval.{key}"
    metrics: list[str] = Field(min_length=1, description="image-level metrics, e.g. [asr, tifa]")
    survivors: int = Field(4, ge=1, description="how many text-level front trials get image metrics")
    eval: dict[str, Any] = Field(
        default_factory=dict, description="sage_core.evaluation.EvalConfig settings of the image stage: "
        "sd_model (required), tifa_questions + vqa_model, clip_model, fid_reference, steps, height, width, "
        "attack_sets, image_attack_samples, tifa_samples, device, ...")


class FidelityPlan(_Strict):
    text_every: int = Field(description="steps between text-level evaluations (TrainConfig.eval_every)", ge=1,
                            examples=["20"])
    rungs: list[Annotated[int, Field(gt=0)]] | None = Field(
        None, description="steps where the scheduler decides (each > 0 and below the run length); default: "
        "every text evaluation but the last")
    image: ImageStage | None = Field(None, description="image-level metrics for the survivors")
    robust: dict[str, Any] | None = Field(
        None, description="benign LoRA fine-tune at every text evaluation, then safety again (robust_* metrics; "
        "sage_core.robustness.RobustConfig: steps, objective, data, samples, lr, rank, ...); {} = defaults")
    proximal: dict[str, Any] | None = Field(
        None, description="proximal-concept disruption at every text evaluation (prox_*, sadi_text; "
        "sage_core.evaluation.proximal.ProximalConfig: prompts, pool_samples, k, ...); {} = defaults")

    @model_validator(mode="after")
    def _rungs_at_text_evaluations(self, info: ValidationInfo) -> "FidelityPlan":
        problems = [f"fidelity.rungs: {r} is not a multiple of fidelity.text_every={self.text_every} "
                    "(decisions happen at text evaluations)" for r in self.rungs or [] if r % self.text_every]
        if self.rungs is not None and sorted(set(self.rungs)) != list(self.rungs):
            problems.append(f"fidelity.rungs={self.rungs}: must be strictly increasing")
        _raise_unless_deferred(problems, info)
        return self


class Resources(_Strict):
    cpus: float = Field(1.0, gt=0, description="CPUs per trial")
    gpus: float = Field(0.0, ge=0, description="GPUs per trial; fractional shares a device, e.g. 0.5")
    workers: int = Field(1, ge=1, description="data-parallel DeepSpeed workers per trial, each with the cpus/"
                         "gpus/custom above (Ray Train TorchTrainer; exact full-batch gradients)")
    custom: dict[str, float] = Field(default_factory=dict, description="extra Ray resources per trial")

    @model_validator(mode="after")
    def _whole_gpus(self, info: ValidationInfo) -> "Resources":
        problems = []
        if self.workers > 1 and 0 < self.gpus < 1:
            problems.append(f"resources.gpus={self.gpus} with workers={self.workers}: data-parallel workers each "
                            "need a whole GPU (NCCL); use gpus: 1, or workers: 1 to share a device")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            problems.append(f"resources.gpus={self.gpus}: above 1 it must be a whole number")
        _raise_unless_deferred(problems, info)
        return self


class Tracking(_Strict):
    kind: Literal["tensorboard", "mlflow", "wandb"] = Field(
        "tensorboard", description="where trials are tracked besides the results store: tensorboard (event "
        "files in each trial folder, always written), mlflow (a run per trial), wandb (offline runs)")
    uri: str | None = Field(None, description="mlflow: tracking URI, default sqlite:///<storage>/mlflow.db "
                            "(a file store folder or an http(s) server also work)")
    experiment: str | None = Field(None, description="MLflow experiment / W&B project; default: the spec name")

    def problems(self, storage: str) -> list[str]:
        """What keeps this tracking from working with ``storage`` here (callbacks: sweeps.tracking)."""
        out = []
        package = {"mlflow": "mlflow", "wandb": "wandb"}.get(self.kind)
        if package and importlib.util.find_spec(package) is None:
            out.append(f"tracking.kind={self.kind!r}: needs the {package} package (pip install "
                       f"{'mlflow-skinny' if package == 'mlflow' else package}); or use tracking.kind=tensorboard")
        if self.uri is not None and self.kind != "mlflow":
            out.append(f"tracking.uri={self.uri!r}: only read with tracking.kind=mlflow (kind is {self.kind!r}); "
                       "remove it or set tracking.kind=mlflow")
        elif self.kind == "mlflow" and self.uri is None and is_uri(storage):
            out.append(f"tracking.uri: required with tracking.kind=mlflow when storage={storage!r} is object "
                       "storage (the default sqlite file lives in the sweep folder); give sqlite:///PATH or "
                       "http(s)://HOST:PORT")
        elif self.uri is not None and "://" in self.uri and not self.uri.startswith(
                ("sqlite:///", "file:", "http://", "https://", "databricks")):
            out.append(f"tracking.uri={self.uri!r}: not a tracking URI MLflow opens (allowed: sqlite:///PATH, a "
                       "folder, file:///PATH, http(s)://HOST:PORT)")
        if self.experiment is not None and not self.experiment.strip():
            out.append("tracking.experiment='': give a name, or leave it out to use the spec name")
        return out


class SweepSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    preset: Literal["quickstart", "paper", "des"] | None = Field(None, description="TrainConfig preset")
    train: dict[TrainField, Any] = Field(default_factory=dict, description="TrainConfig overrides for every trial")
    space: dict[VariedField, SpaceDimension] = Field(
        default_factory=dict, description="TrainConfig field -> dimension ({grid: [...]}, {choice: [...]}, "
        "{uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high]})")
    variants: dict[str, dict[VariedField, Any]] = Field(
        default_factory=dict, description="named sets of TrainConfig overrides (e.g. DES, DES+ESP, SAGE), "
        "crossed with the space as one more grid dimension called 'variant'")
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    objectives: list[Objective] = Field(min_length=1, examples=["[{metric: concept_auc}, {metric: util_sib}]"])
    fidelity: FidelityPlan = Field(examples=["{text_every: 20}"])
    resources: Resources = Resources()
    storage: str = Field(description="sweep folder: local/shared path or object-storage URI",
                         examples=["runs/my-sweep (or --storage)"])
    max_failures: int = Field(2, ge=-1, description="retries per trial from its last checkpoint (-1: forever)")
    tracking: Tracking = Field(Tracking(), description="experiment tracking (sweeps.tracking): "
                               "--set tracking.kind=mlflow")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> "SweepSpec":
        _raise_unless_deferred(self.cross_field_problems(), info)
        return self

    def cross_field_problems(self) -> list[str]:
        """Checks across fields (the registry's metrics and files are read by :func:`validate_spec`)."""
        problems = [f"variants.{vname}.{key}: also in space; vary it in one place"
                    for vname, overrides in self.variants.items() for key in overrides if key in self.space]
        metrics = [o.metric for o in self.objectives]
        for i, metric in enumerate(metrics):
            stage = getattr(metric_registry.lookup(metric), "fidelity", None)
            if metric in metrics[:i]:
                problems.append(f"objectives[{i}].metric={metric!r}: listed twice")
            elif stage in ("robust", "proximal") and getattr(self.fidelity, stage) is None:
                problems.append(f"objectives[{i}].metric={metric!r}: measured by the {stage} stage; add "
                                f"fidelity.{stage}: {{}} (defaults) to the spec")
        return problems + self._search_problems()

    def _search_problems(self) -> list[str]:
        algorithm, dims = self.search.algorithm, self.dimensions()
        if algorithm in ("tpe", "nsga2") and not dims:
            return [f"search.algorithm={algorithm!r}: needs a non-empty space"]
        sampled = [n for n, d in dims.items() if not isinstance(d, Grid)]
        if algorithm == "grid" and sampled:
            return [f"search.algorithm='grid': space dimensions {sampled} are sampled, not grid; "
                    "use {grid: [...]} or algorithm random/tpe/nsga2"]
        n_trials = trial_count(self, dims)
        if n_trials > self.search.max_trials:
            how = "grid points x num_samples" if algorithm in ("grid", "random") else "num_samples"
            return [f"search: the sweep has {n_trials:,} trials ({how}), above search.max_trials="
                    f"{self.search.max_trials:,}; shrink the grid, or raise search.max_trials on purpose"]
        return []

    # ----------------------------------------------------------------------------------
    def dimensions(self) -> dict[str, Dimension]:
        """The search dimensions, with ``variant`` first when the spec names variants."""
        dims: dict[str, Dimension] = {VARIANT: Grid(grid=list(self.variants))} if self.variants else {}
        dims.update(self.space)
        return dims

    def objective_metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    def objective_modes(self) -> list[str]:
        """Each objective's direction, from the metric registry."""
        return [o.resolved_mode for o in self.objectives]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------
def is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def shipped_specs() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def resolve_spec_path(name_or_path: str | os.PathLike, *, relative_to: Path | None = None) -> Path:
    """A spec name (``quickstart``) -> ``sweeps/specs/quickstart.yaml``; a path stays a path."""
    raw = str(name_or_path)
    candidates = []
    if relative_to is not None:
        candidates += [relative_to / raw, relative_to / f"{raw}.yaml"]
    candidates += [Path(raw).expanduser(), SPECS_DIR / f"{raw}.yaml", SPECS_DIR / raw]
    for c in candidates:
        if c.is_file():
            return c
    hint = did_you_mean(Path(raw).stem, shipped_specs())
    raise ConfigError(f"spec '{raw}': no such file and no shipped spec of that name{hint}; "
                      f"shipped: {', '.join(shipped_specs())}")


_REPLACED = {"space", "objectives", "variants"}


def _merge(base: Mapping[str, Any], child: Mapping[str, Any], *, top: bool = True) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not (top and key in _REPLACED):
            out[key] = _merge(out[key], value, top=False)
        else:
            out[key] = value
    return out


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def resolve_include(raw: Any, *, including: Path) -> Path:
    """``include:`` of the spec file ``including``: a file under that file's own folder, or a shipped
    spec by name. Anything else (``../../etc/passwd``, an absolute path elsewhere, a link out of
    the folder) is refused."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{including}: include={raw!r} is not allowed (allowed: a shipped spec name such as "
                          "paper-default, or a file under the spec's own folder)")
    folder = including.parent.resolve()
    for candidate in (folder / raw, folder / f"{raw}.yaml"):
        real = candidate.resolve()
        if real.is_file():
            if _inside(real, folder):
                return real
            raise ConfigError(f"{including}: include {raw!r} resolves to {real}, outside the spec's folder {folder}; "
                              "include a shipped spec by name or a file under that folder")
    if "/" not in raw and "\\" not in raw and raw not in (".", ".."):
        for candidate in (SPECS_DIR / f"{raw}.yaml", SPECS_DIR / raw):
            if candidate.is_file():
                return candidate.resolve()
    hint = did_you_mean(Path(raw).stem, shipped_specs())
    raise ConfigError(f"{including}: include {raw!r}: no such file under {folder} and no shipped spec of that "
                      f"name{hint}; shipped: {', '.join(shipped_specs())}")


def _read_with_includes(path: Path, *, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p.name) for p in (*seen, path))
        raise ConfigError(f"include: cycle {chain}")
    data = read_yaml_mapping(path, what="sweep spec")
    parent = data.pop("include", None)
    alias = data.pop("base", None)
    if parent is not None and alias is not None:
        raise ConfigError(f"{path.name}: give 'include' or 'base', not both")
    parent = parent if parent is not None else alias
    if parent is None:
        return data
    parent_path = resolve_include(parent, including=path)
    return _merge(_read_with_includes(parent_path, seen=(*seen, path)), data)


def _set_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    head = parts[0]
    if head not in SweepSpec.model_fields:
        if head in TrainConfig.model_fields and len(parts) == 1:
            parts = ["train", head]  # `--set lr=1e-4` is short for `--set train.lr=1e-4`
        else:
            hint = did_you_mean(head, [*SweepSpec.model_fields, *TrainConfig.model_fields])
            raise ConfigError(f"--set {dotted}=...: unknown key '{head}'{hint}; use a spec field "
                              f"({', '.join(SweepSpec.model_fields)}), a dotted path such as "
                              "search.num_samples, or a TrainConfig field such as lr")
    node = values
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {} if nxt is None else nxt
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is not a mapping")
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def apply_overrides(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(values)
    for key, value in overrides.items():
        _set_path(out, key, value)
    return out


def load_spec(name_or_path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None,
              storage: str | None = None, check: bool = True) -> SweepSpec:
    """Read a spec (with includes), apply ``--set`` overrides and ``--storage``; with ``check``,
    validate it (:func:`validate_spec`), reporting every problem in one error."""
    path = resolve_spec_path(name_or_path)
    values = _read_with_includes(path)
    values.setdefault("name", path.stem)
    values = apply_overrides(values, overrides or {})
    if storage is not None:
        values["storage"] = storage
    try:
        spec = SweepSpec(**values)
    except ValidationError as exc:
        problems = format_validation_error(exc, model=SweepSpec)
        salvaged = _salvage(values, exc) if check else None
        if salvaged is not None:
            more = salvaged.cross_field_problems() + _problems_and_coverage(salvaged)[0]
            problems += [p for p in more if p not in problems]
        raise _spec_error(problems, name=path.name) from None
    if check:
        validate_spec(spec)
    return spec


def _salvage(values: Mapping[str, Any], exc: ValidationError) -> SweepSpec | None:
    """The spec without the ``space`` / ``variants`` / ``train`` entries pydantic refused and with
    the checks across fields deferred, so that every other check still runs on the rest; None
    when other parts failed."""
    pruned = {k: (dict(v) if k in ("space", "variants", "train") and isinstance(v, Mapping) else v)
              for k, v in values.items()}
    for loc in (err["loc"] for err in exc.errors()):
        if len(loc) >= 2 and loc[0] in ("space", "variants", "train") and isinstance(pruned[loc[0]], dict):
            pruned[loc[0]].pop(loc[1], None)
    if values.get("space") and not pruned.get("space"):
        return None  # an empty space is a problem of its own (tpe/nsga2), not the user's
    try:
        return SweepSpec.model_validate(pruned, context=_DEFER)
    except ValidationError:
        return None


def spec_from_text(text: str, *, where: str) -> SweepSpec:
    """A saved resolved spec (a sweep folder's ``spec.yaml``), bounded and checked; one-line errors."""
    data = load_yaml_text(text, where=where)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of spec keys, got {type(data).__name__}")
    try:
        return SweepSpec(**data)
    except ValidationError as exc:
        raise _spec_error(format_validation_error(exc, model=SweepSpec), name=where) from None


def _spec_error(problems: list[str], *, name: str) -> ConfigError:
    """One error listing every problem of a spec."""
    return ConfigError([f"spec '{name}': {problems[0]}"] if len(problems) == 1 else
                       [f"spec '{name}' has {len(problems)} problems"] + problems)


# ---------------------------------------------------------------------------------------------
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


def base_train_config(spec: SweepSpec, *, storage_root: Path | None = None) -> dict[str, Any]:
    """Base TrainConfig values of every trial: preset < train overrides < sweep-owned fields.

    ``cache_dir`` is ``train.cache_dir`` (``sage sweep run --cache-dir``), else the user-level cache
    of the driver (``$SAGE_CACHE_DIR`` or ``~/.cache/sage-sweeps``), resolved here so every trial
    reads the entries the driver built; it no longer depends on ``storage_root`` (kept for callers).
    """
    from sage_core.cache import default_cache_dir

    values = dict(read_yaml_mapping(_preset_file(spec.preset), what="preset")) if spec.preset else {}
    values.update(spec.train)
    values["eval_every"] = spec.fidelity.text_every
    values["cache_dir"] = str(Path(values["cache_dir"]).expanduser().absolute() if values.get("cache_dir")
                              else default_cache_dir())
    return values


def _preset_file(name: str) -> Path:
    from sage_core.config import preset_path

    return preset_path(name)


def trial_values(base: Mapping[str, Any], params: Mapping[str, Any],
                 variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """TrainConfig values of one trial: base < its variant's overrides < its sampled params."""
    values = dict(base)
    params = dict(params)
    name = params.pop(VARIANT, None)
    if name is not None:
        values.update(variants[name])
    values.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()})
    return values


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any],
                 variants: Mapping[str, Mapping[str, Any]] | None = None) -> TrainConfig:
    return load_config(overrides=trial_values(base, params, variants or {}))


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
    path = Path(storage.removeprefix("file://")).expanduser()
    created: list[Path] = []
    try:
        probe = path
        while not probe.exists():
            created.append(probe)
            probe = probe.parent
        if not probe.is_dir():
            return [f"storage={storage!r}: '{probe}' exists and is not a folder"]
        path.mkdir(parents=True, exist_ok=True)
        test = path / ".sage-write-test"
        test.write_text("ok")
        test.unlink()
    except OSError as exc:
        return [f"storage={storage!r}: not writable ({exc.strerror or exc}); pick a folder you can write"]
    finally:
        for p in created:  # leave nothing behind: validation must not create the sweep folder
            try:
                p.rmdir()
            except OSError:
                pass
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
    import json

    try:
        from sage_core.encoders import resolve_encoder_path

        config = json.loads((resolve_encoder_path(spec)[0] / "config.json").read_text(encoding="utf-8"))
    except (SageError, OSError, ValueError):
        return None  # the trial config check reports an unusable encoder
    width = config.get("hidden_size", config.get("text_config", {}).get("hidden_size"))
    return int(width) if isinstance(width, int) else None


def _unet_cross_dim(sd_model: str | None) -> int | None:
    import json

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
    problems, coverage = _problems_and_coverage(spec)
    if problems:
        raise _spec_error(problems, name=spec.name)
    return coverage


def _problems_and_coverage(spec: SweepSpec) -> tuple[list[str], Coverage]:
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
        trial_problems, coverage = _trial_config_problems(spec, base)
        problems += trial_problems
    problems += _storage_problems(spec.storage)
    problems += spec.tracking.problems(spec.storage)
    return problems, coverage


def _stage_problems(spec: SweepSpec) -> list[str]:
    """The robust / proximal / image stages: their settings, metrics and inputs."""
    fidelity, problems = spec.fidelity, []
    if fidelity.robust is not None or fidelity.proximal is not None or fidelity.image is not None:
        problems += stage_problems(fidelity.robust, fidelity.proximal,
                                   image_metrics=fidelity.image.metrics if fidelity.image else None)
    if fidelity.image is not None:
        unknown = [m for m in fidelity.image.metrics if not _metric_known(m, IMAGE_METRICS)]
        problems += [f"fidelity.image.metrics: {m!r} is not an image-level metric ({', '.join(IMAGE_METRICS)})"
                     for m in unknown]
        if not unknown:
            problems += _image_stage_problems(spec)
    return problems


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


def trial_count(spec: SweepSpec, dims: Mapping[str, Dimension] | None = None) -> int:
    """Trials the sweep runs: grid points x num_samples (grid, random), num_samples (Optuna)."""
    dims = spec.dimensions() if dims is None else dims
    if spec.search.algorithm in ("grid", "random"):
        return grid_size(dims) * spec.search.num_samples
    return spec.search.num_samples


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
            for name, vals in zip(names, values):
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


def describe(spec: SweepSpec, coverage: Coverage | None = None) -> str:
    """One paragraph for ``sage sweep validate`` (with what validation covered, when given)."""
    dims = spec.dimensions()
    n = grid_size(dims) * spec.search.num_samples
    kind = "grid points x repeats" if spec.search.algorithm == "grid" else "samples"
    objs = ", ".join(f"{o.resolved_mode} {o.metric}" for o in spec.objectives)
    return (f"spec '{spec.name}' is valid: {n} trial(s) ({kind}), search {spec.search.algorithm}, "
            f"scheduler {spec.scheduler.kind} (eta {spec.scheduler.eta}), objectives: {objs}; "
            f"varies {', '.join(dims) or 'nothing'}; storage {spec.storage}"
            + (f"; {coverage}" if coverage is not None else ""))

