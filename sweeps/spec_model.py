"""The sweep spec's models: ``SweepSpec`` and its parts, validated at construction.

Each part checks its own fields; checks across fields are model validators (``FidelityPlan``:
rungs at text evaluations; ``Resources``: whole GPUs; ``SweepSpec``: variants, objectives, search,
trial count). What needs the metric registry's evaluators, files or the network is checked by
:mod:`sweeps.spec_checks`; reading YAML, includes and overrides is :mod:`sweeps.spec`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator, model_validator

from sage_core.defs import metrics as metric_registry
from sage_core.defs.config import TrainConfig, preset_path, read_yaml_mapping
from sage_core.defs.errors import FieldProblem, did_you_mean
from sage_core.defs.locations import default_cache_dir
from sage_core.defs.strict_values import MAX_SEED, STRICT_MODEL, check_value

from .robust_stage import ATTACK_AT, attack_at_problems, attack_objective_problems
from .space import Dimension, Grid, SpaceDimension, grid_size

__all__ = ["SweepSpec", "Objective", "SearchConfig", "SchedulerConfig", "FidelityPlan", "ImageStage", "Resources",
           "Tracking", "VARIANT", "SEED", "DEFAULT_MAX_TRIALS", "TEXT_METRICS", "IMAGE_METRICS",
           "DEFER_CROSS_FIELD_CHECKS",
           "is_uri", "trial_count", "base_train_config", "trial_values"]

VARIANT = "variant"
SEED = "seed"  # the TrainConfig field that ``seeds: N`` varies
DEFAULT_MAX_TRIALS = 100_000

# Metrics each evaluator produces; '*' = any suffix (per attack set / per category).
# What rungs may rank by (text level, geometry, training losses) and what only the image stage
# produces: both read from the metric registry, the one place that names a metric.
TEXT_METRICS = tuple(m.name + ("*" if m.family else "") for m in metric_registry.REGISTRY.values()
                     if m.fidelity in ("text", "geometry", "train"))
IMAGE_METRICS = tuple(m.name + ("*" if m.family else "") for m in metric_registry.REGISTRY.values()
                      if m.fidelity == "image")


class _Strict(BaseModel):
    model_config = STRICT_MODEL

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        """Booleans are not numbers; an empty storage is not a path (NaN/inf: STRICT_MODEL)."""
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
        raise FieldProblem("not a TrainConfig field that a sweep may vary"
                           f"{did_you_mean(name, TrainConfig.model_fields)}")
    return name


def _train_field(name: str) -> str:
    """A key of ``train``: a TrainConfig field, but not the one the sweep sets."""
    if name not in TrainConfig.model_fields:
        raise FieldProblem(f"unknown TrainConfig field{did_you_mean(name, TrainConfig.model_fields)}")
    if name == "eval_every":
        raise FieldProblem("set by the sweep from fidelity.text_every; remove it")
    return name


# Validation context under which the checks across fields wait (load_spec then runs them itself, so
# that they are reported together with the field problems; see sweeps.spec._salvage).
_DEFER_KEY = "defer_cross_field_checks"
DEFER_CROSS_FIELD_CHECKS = {_DEFER_KEY: True}


def _raise_unless_deferred(problems: list[str], info: ValidationInfo) -> None:
    if problems and not (info.context or {}).get(_DEFER_KEY):
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
    algorithm: Literal["grid", "random", "tpe", "nsga2", "ehvi"] = Field(
        "grid", description="grid/random through Tune's BasicVariantGenerator; tpe/nsga2 through "
        "Optuna (multi-objective); ehvi: the proposals of grid/random run in the order of their expected "
        "hypervolume gain under a Gaussian-process surrogate (sweeps/mf_search.py; with search.probe it "
        "also pauses and resumes trials, and scheduler: is not used)")
    num_samples: int = Field(1, ge=1, description="grid: repeats of the whole grid; others: trials")
    seed: int | None = Field(0, ge=0, le=MAX_SEED, description="sampler seed (Optuna) / Tune random seed")
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    max_trials: int = Field(DEFAULT_MAX_TRIALS, ge=1, description="refuse a sweep of more trials than this "
                            "(grid: grid points x num_samples); raise it on purpose for a larger sweep")
    probe: bool = Field(False, description="ehvi only: run every proposal to fidelity.rungs[0] first (paused "
                        "there), then finish the ones with the largest expected gain; off by default (on the "
                        "recorded SAGE curves the probes cost more than they told, see bench/RESULTS.md)")
    warm_start: str | None = Field(None, min_length=1, description="storage folder of an earlier sweep with "
                                   "the same encoder, prompt data and objectives whose results seed the search "
                                   "(sage sweep run --warm-start DIR); see docs/sweeps.md")


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
    attack: dict[str, Any] | None = Field(
        None, description="optimised attack on the live encoder at the rungs and the final step (attack_depth "
        "[lo, hi], attack_steps_median, attack_recovered_at_*; sage_core.evaluation.attack.AttackConfig: steps "
        "(budget), n_tokens (k), mode (tokens|soft), prompts, candidates, ...; at: [steps] to attack at those "
        "text evaluations instead of the rungs); {} = defaults")

    @model_validator(mode="after")
    def _rungs_at_text_evaluations(self, info: ValidationInfo) -> FidelityPlan:
        problems = [f"fidelity.rungs: {r} is not a multiple of fidelity.text_every={self.text_every} "
                    "(decisions happen at text evaluations)" for r in self.rungs or [] if r % self.text_every]
        if self.rungs is not None and sorted(set(self.rungs)) != list(self.rungs):
            problems.append(f"fidelity.rungs={self.rungs}: must be strictly increasing")
        _raise_unless_deferred(problems + attack_at_problems(self.attack, text_every=self.text_every), info)
        return self

    def attack_steps(self) -> list[int] | None:
        """The text evaluations the attack stage runs at besides the final one (``fidelity.attack.at``,
        else the rungs); None: every evaluation (no rungs given: the scheduler decides at each)."""
        at = (self.attack or {}).get(ATTACK_AT)
        return list(at) if isinstance(at, list) else self.rungs

    def attack_settings(self) -> dict[str, Any] | None:
        """``fidelity.attack`` without ``at``: the AttackConfig values (None: no attack stage)."""
        return None if self.attack is None else {k: v for k, v in self.attack.items() if k != ATTACK_AT}


class Resources(_Strict):
    cpus: float = Field(1.0, gt=0, description="CPUs per trial")
    gpus: float = Field(0.0, ge=0, description="GPUs per trial; fractional shares a device, e.g. 0.5")
    workers: int = Field(1, ge=1, description="data-parallel DeepSpeed workers per trial, each with the cpus/"
                         "gpus/custom above (Ray Train TorchTrainer; exact full-batch gradients)")
    custom: dict[str, float] = Field(default_factory=dict, description="extra Ray resources per trial")

    @model_validator(mode="after")
    def _whole_gpus(self, info: ValidationInfo) -> Resources:
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
    seeds: int = Field(1, ge=1, description="train every configuration N times, with training seeds seed, "
                       "seed + 1, ... (seed: train.seed, default 0), all evaluated on the same prompts; the "
                       "repeats tell an objective's signal from seed noise (`sage reliability`); grid search only")
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
    def _consistent(self, info: ValidationInfo) -> SweepSpec:
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
            elif stage in ("robust", "proximal", "attack") and getattr(self.fidelity, stage) is None:
                problems.append(f"objectives[{i}].metric={metric!r}: measured by the {stage} stage; add "
                                f"fidelity.{stage}: {{}} (defaults) to the spec")
        problems += attack_objective_problems(self.fidelity.attack, rungs=self.fidelity.rungs, objectives=metrics)
        return problems + self._seed_problems() + self._search_problems()

    def _seed_problems(self) -> list[str]:
        if self.seeds == 1:
            return []
        places = {"space": self.space, **{f"variants.{v}": o for v, o in self.variants.items()}}
        problems = [f"{where}.{SEED}: also set by seeds={self.seeds}; vary the seed in one place"
                    for where, keys in places.items() if SEED in keys]
        if self.search.algorithm != "grid":
            problems.append(f"seeds={self.seeds} with search.algorithm={self.search.algorithm!r}: repeated seeds "
                            "need algorithm 'grid' (every grid point is trained once per seed); for sampled "
                            "searches run the sweep once per train.seed")
        return problems

    def _search_problems(self) -> list[str]:
        algorithm, dims, problems = self.search.algorithm, self.dimensions(), []
        if algorithm in ("tpe", "nsga2") and not dims:
            problems.append(f"search.algorithm={algorithm!r}: needs a non-empty space")
        if self.search.probe and algorithm != "ehvi":
            problems.append(f"search.probe=true with search.algorithm={algorithm!r}: probing is part of the "
                            "ehvi search; set search.algorithm: ehvi or drop search.probe")
        if algorithm == "random" and self.search.warm_start:
            problems.append("search.warm_start with search.algorithm='random': random draws never read "
                            "results; use grid, ehvi, tpe or nsga2 (or drop the warm start)")
        sampled = [n for n, d in dims.items() if not isinstance(d, Grid)]
        if algorithm == "grid" and sampled:
            problems.append(f"search.algorithm='grid': space dimensions {sampled} are sampled, not grid; "
                            "use {grid: [...]} or algorithm random/tpe/nsga2")
        if self.too_many_trials():
            how = "grid points x num_samples" if algorithm in ("grid", "random", "ehvi") else "num_samples"
            problems.append(f"search: the sweep has {trial_count(self, dims):,} trials ({how}), above "
                            f"search.max_trials={self.search.max_trials:,}; shrink the grid, or raise "
                            "search.max_trials on purpose")
        return problems

    def too_many_trials(self) -> bool:
        return trial_count(self) > self.search.max_trials

    # ----------------------------------------------------------------------------------
    def dimensions(self) -> dict[str, Dimension]:
        """The search dimensions, with ``variant`` first when the spec names variants."""
        dims: dict[str, Dimension] = {VARIANT: Grid(grid=list(self.variants))} if self.variants else {}
        dims.update(self.space)
        if self.seeds > 1 and SEED not in dims:
            dims[SEED] = Grid(grid=self.training_seeds())
        return dims

    def training_seeds(self) -> list[int]:
        """The training seeds of every configuration: ``seed .. seed + seeds - 1`` from the base seed
        (``train.seed``, else the preset's, else TrainConfig's default)."""
        base = self.train.get(SEED)
        if base is None and self.preset:
            base = read_yaml_mapping(preset_path(self.preset), what="preset").get(SEED)
        if isinstance(base, bool) or not isinstance(base, int):  # a bad train.seed is reported by TrainConfig
            base = TrainConfig.model_fields[SEED].default
        return [base + i for i in range(self.seeds)]

    def objective_metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    def objective_modes(self) -> list[str]:
        """Each objective's direction, from the metric registry."""
        return [o.resolved_mode for o in self.objectives]

    def to_yaml(self) -> str:
        # ``seeds`` only when it repeats, ``search.warm_start`` only when set: a spec lists what it
        # varies (and saved specs stay as they were).
        exclude: dict[str, Any] = {"seeds": True} if self.seeds == 1 else {}
        if self.search.warm_start is None:
            exclude["search"] = {"warm_start"}
        if not self.search.probe:  # likewise search.probe (ehvi) only when set
            exclude.setdefault("search", set()).add("probe")
        if self.fidelity.attack is None:  # and fidelity.attack only when the spec has the stage
            exclude["fidelity"] = {"attack"}
        return yaml.safe_dump(self.model_dump(mode="json", exclude=exclude or None), sort_keys=False)


def is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def trial_count(spec: SweepSpec, dims: Mapping[str, Dimension] | None = None) -> int:
    """Trials the sweep runs: grid points x num_samples (grid, random), num_samples (Optuna)."""
    dims = spec.dimensions() if dims is None else dims
    if spec.search.algorithm in ("grid", "random", "ehvi"):
        return grid_size(dims) * spec.search.num_samples
    return spec.search.num_samples


def base_train_config(spec: SweepSpec, *, storage_root: Path | None = None) -> dict[str, Any]:
    """Base TrainConfig values of every trial: preset < train overrides < sweep-owned fields.

    ``cache_dir`` is ``train.cache_dir`` (``sage sweep run --cache-dir``), else the user-level cache
    of the driver (``$SAGE_CACHE_DIR`` or ``~/.cache/sage-sweeps``), resolved here so every trial
    reads the entries the driver built; it no longer depends on ``storage_root`` (kept for callers).
    """
    values = dict(read_yaml_mapping(preset_path(spec.preset), what="preset")) if spec.preset else {}
    values.update(spec.train)
    values["eval_every"] = spec.fidelity.text_every
    values["cache_dir"] = str(Path(values["cache_dir"]).expanduser().absolute() if values.get("cache_dir")
                              else default_cache_dir())
    return values


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
