"""``TrainConfig``: every hyperparameter of a SAGE/DES run, validated at construction.

Defaults are the official SAGE run (``docs/method.md`` section 5: ``train.sh`` / the paper model),
except the encoder, which defaults to the embedded MiniLM so that nothing downloads.
Precedence: ``--set`` overrides > YAML file / preset > these defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError, did_you_mean, format_validation_error
from .locations import BUILTIN_PROMPT_SETS, SD14_INIT, default_cache_dir, encoder_is_clip
from .safe_yaml import load_yaml_text, read_yaml_file
from .strict_values import MAX_SEED, STRICT_MODEL, check_value

if TYPE_CHECKING:
    from ..evaluation.attack import AttackConfig

__all__ = ["TrainConfig", "PRESETS", "load_config", "parse_overrides", "format_validation_error",
           "preset_path", "field_defaults"]

PRESETS = ("quickstart", "paper", "des")
_PATH_FIELDS = frozenset({"encoder", "safe_prompts", "unsafe_prompts", "diag_prompts", "cache_dir"})
#: The training attack's budget unless ``adv_attack`` says otherwise (a refresh costs seconds on a CPU).
ADV_ATTACK_DEFAULTS: dict[str, Any] = {"steps": 2, "candidates": 8, "top_k": 32}


class TrainConfig(BaseModel):
    """One SAGE (or DES) training run. Unknown keys are errors."""

    model_config = ConfigDict(**STRICT_MODEL, validate_default=True)

    # --- what is trained -------------------------------------------------------------------
    method: Literal["sage", "des"] = Field(
        "sage", description="sage = DES + ESP + LSA; des forces lambda_esp = lambda_lsa = 0")
    encoder: str = Field(
        "minilm", description="'minilm' (embedded all-MiniLM-L6-v2), a Stable Diffusion folder "
        "(text_encoder/ + tokenizer/), a Hugging Face text-encoder folder, or 'sd14-init' (SD v1.4's "
        "text encoder shape and tokenizer, random weights: for paper-scale speed and memory only)")
    require_clip_encoder: bool = Field(
        False, description="refuse an encoder that is not a CLIP text encoder; the paper and des presets "
        "set it, because their 77 tokens and s = 205 are in SD v1.4 CLIP units; set false to train "
        "another encoder with those settings anyway")
    max_length: int | None = Field(
        None, ge=2, le=4096, description="tokens per prompt; default 77 for CLIP (what the UNet "
        "reads), 32 for other encoders")
    # --- data ------------------------------------------------------------------------------
    safe_prompts: str = Field("copro-safe", description="built-in set name or CSV path")
    unsafe_prompts: str = Field("copro-unsafe", description="built-in set name or CSV path")
    max_pairs: int | None = Field(
        None, ge=2, description="use only the first N safe and N unsafe prompts (quick runs); "
        "default all, as the paper")
    concept: str = Field("nudity", min_length=1, description="concept prompt to erase")
    # --- DES -------------------------------------------------------------------------------
    concept_guidance_scale: float | None = Field(
        205.0, gt=0, description="s in absolute embedding units (paper 205, DES 200)")
    concept_guidance_ratio: float | None = Field(
        None, gt=0, description="s as a multiple of the mean |f0(x_safe)|; overrides the scale")
    lambda_safe: float = Field(0.3, ge=0, le=1, description="weight of DES term 1 vs terms 2+3")
    des_terms: tuple[int, ...] = Field((1, 2, 3), description="DES loss terms enabled (1, 2, 3)")
    # --- SAGE regularizers -----------------------------------------------------------------
    lambda_esp: float = Field(2.0, ge=0, description="Embedding Spread Preservation weight")
    lambda_lsa: float = Field(0.1, ge=0, description="Local Structure Alignment weight")
    local_k: int = Field(15, ge=1, description="LSA neighbours per prompt (within the batch)")
    alpha: float = Field(1.0, ge=0, description="LSA concept-direction perturbation")
    # --- adversarial training (sage_core.adversarial; off by default) ------------------------
    lambda_adv: float = Field(0.0, ge=0, description="weight of the adversarial unsafe-mapping term (0 = off)")
    adv_every: int = Field(1, ge=1, description="steps between refreshes of the batch's adversarial prompts")
    adv_attack: dict[str, Any] = Field(
        default_factory=dict, description="AttackConfig overrides of the training attack, e.g. {steps: 2, "
        "candidates: 8}; default steps 2, candidates 8, top_k 32")
    # --- optimisation ----------------------------------------------------------------------
    lr: float = Field(1e-5, gt=0, le=1.0)
    weight_decay: float = Field(0.01, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    batch_size: int = Field(128, ge=2, description="pairs per optimiser step (effective batch)")
    micro_batch_size: int | None = Field(
        None, ge=1, description="pairs per forward/backward; exact gradients of the full batch "
        "are accumulated (embedding-level accumulation), default = batch_size")
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # --- engine ----------------------------------------------------------------------------
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage")
    precision: Literal["auto", "fp32", "bf16", "fp64"] = Field(
        "auto", description="auto = bf16 on GPU, fp32 on CPU; fp64 = a float64 reference run (slow)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # --- bookkeeping -----------------------------------------------------------------------
    checkpoint_every: int | None = Field(None, ge=1, description="steps; default once per epoch")
    eval_every: int | None = Field(None, ge=1, description="steps; default once per epoch")
    keep_checkpoints: int = Field(2, ge=1, description="periodic checkpoints kept on disk")
    diag_prompts: str = Field("coco", description="benign prompts for the geometry diagnostics")
    diag_samples: int = Field(256, ge=4, description="how many of them (first N rows)")
    diag_k: int = Field(15, ge=1, description="K of the Jaccard@K diagnostic")
    cache_dir: str | None = Field(
        None, description="base-embedding cache; default $SAGE_CACHE_DIR, else ~/.cache/sage-sweeps")
    text_eval: dict[str, Any] = Field(
        default_factory=dict, description="EvalConfig overrides for the text-level evaluation at every "
        "eval step, e.g. {calibration_samples: 300, attack_samples: 64}; concept and the diag_* "
        "geometry settings are filled in from this config")

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        """Booleans are not numbers; empty strings are not paths (NaN/inf: STRICT_MODEL)."""
        name = info.field_name or ""
        return check_value(name, value, annotation=cls.model_fields[name].annotation, path=name in _PATH_FIELDS)

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        problems: list[str] = []
        if self.method == "des" and (self.lambda_esp or self.lambda_lsa):
            # Stated, not silently fixed: DES is SAGE without the two regularizers.
            problems.append(f"method 'des' needs lambda_esp = lambda_lsa = 0 (got {self.lambda_esp}, "
                            f"{self.lambda_lsa}); use method 'sage' or set both to 0")
        if self.local_k + 1 > self.batch_size and self.lambda_lsa > 0:
            problems.append(f"local_k={self.local_k} needs batch_size >= local_k + 1 "
                            f"(got batch_size={self.batch_size}): LSA picks K neighbours within a batch")
        if self.micro_batch_size is not None:
            if self.micro_batch_size > self.batch_size:
                problems.append(f"micro_batch_size={self.micro_batch_size} is larger than "
                                f"batch_size={self.batch_size}")
            elif self.batch_size % self.micro_batch_size:
                problems.append(f"micro_batch_size={self.micro_batch_size} must divide "
                                f"batch_size={self.batch_size}")
        bad_terms = [t for t in self.des_terms if t not in (1, 2, 3)]
        if bad_terms or not self.des_terms or len(set(self.des_terms)) != len(self.des_terms):
            problems.append(f"des_terms={list(self.des_terms)}: allowed is a non-empty subset of [1, 2, 3]")
        if 1 not in self.des_terms and (self.lambda_esp or self.lambda_lsa):
            problems.append("lambda_esp/lambda_lsa act on DES term 1 (safe preservation): "
                            "enable term 1 in des_terms or set both weights to 0")
        if self.concept_guidance_scale is None and self.concept_guidance_ratio is None:
            problems.append("set concept_guidance_scale or concept_guidance_ratio")
        for name in ("adam_betas",):
            b1, b2 = getattr(self, name)
            if not (0 <= b1 < 1 and 0 <= b2 < 1):
                problems.append(f"{name}={[b1, b2]}: each beta must be in [0, 1)")
        if self.diag_k + 1 > self.diag_samples:
            problems.append(f"diag_k={self.diag_k} needs diag_samples > diag_k (got {self.diag_samples})")
        if self.precision == "bf16" and self.device == "cpu":
            problems.append("precision 'bf16' is for GPUs; use 'fp32' (or 'auto') on device 'cpu'")
        for name in ("safe_prompts", "unsafe_prompts", "diag_prompts"):
            value = getattr(self, name)
            if value not in BUILTIN_PROMPT_SETS and not Path(value).expanduser().is_file():
                problems.append(f"{name}={value!r}: no such file, and not a built-in prompt set "
                                f"({', '.join(sorted(BUILTIN_PROMPT_SETS))})")
        if self.encoder not in ("minilm", SD14_INIT) and not Path(self.encoder).expanduser().is_dir():
            problems.append(f"encoder={self.encoder!r}: no such folder; use 'minilm', '{SD14_INIT}' or a local "
                            "Stable Diffusion / Hugging Face folder (nothing is downloaded)")
        elif self.require_clip_encoder and encoder_is_clip(self.encoder) is False:
            problems.append(f"encoder={self.encoder!r} is not a CLIP text encoder, and require_clip_encoder is "
                            "set (presets paper/des: 77 tokens and s in SD v1.4 CLIP units); use --set "
                            f"encoder=<Stable Diffusion folder> (or {SD14_INIT}: SD v1.4's shape, random weights), "
                            "or --set require_clip_encoder=false to train this encoder anyway")
        problems.extend(self._adversarial_problems())
        if self.text_eval:
            from ..evaluation.config import build_eval_config  # lazy: torch (sage_core.evaluation), off sage_core.defs

            try:
                build_eval_config(self.text_eval)
            except ConfigError as exc:
                problems.extend(f"text_eval.{p}" for p in exc.problems)
        if problems:
            raise ValueError(" | ".join(problems))
        return self

    def _adversarial_problems(self) -> list[str]:
        if not self.lambda_adv:
            return [f"adv_attack: set lambda_adv > 0 to use it (got {self.adv_attack})"] if self.adv_attack else []
        problems = []
        try:
            self.adv_attack_config()
        except ConfigError as exc:
            problems.extend(exc.problems)
        if 2 not in self.des_terms:
            problems.append(f"lambda_adv={self.lambda_adv}: adds to DES term 2 (unsafe mapping); enable term 2 "
                            "in des_terms or set lambda_adv to 0")
        if self.micro_batch_size is not None and self.micro_batch_size != self.batch_size:
            problems.append(f"lambda_adv={self.lambda_adv}: needs one forward per step; leave micro_batch_size "
                            f"unset (got {self.micro_batch_size})")
        return problems

    def adv_attack_config(self) -> AttackConfig:
        """The training attack (``adv_attack`` over the training defaults)."""
        from ..evaluation.attack import build_attack_config  # lazy: keeps torch off the config path

        return build_attack_config({**ADV_ATTACK_DEFAULTS, "seed": self.seed, **self.adv_attack}, where="adv_attack")

    def eval_config_values(self) -> dict[str, Any]:
        """EvalConfig values of the text-level evaluation run at every eval step."""
        return {"concept": self.concept, "benign_prompts": self.diag_prompts, "geometry_samples": self.diag_samples,
                "geometry_k": self.diag_k, **self.text_eval}

    # -------------------------------------------------------------------------------------
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def base_data_key(self) -> str:
        """What ``trainer.prepare`` builds depends on exactly these fields: configs with equal keys
        share their base embeddings, codebook and evaluator base data."""
        fields = ("encoder", "max_length", "safe_prompts", "unsafe_prompts", "concept", "diag_prompts",
                  "diag_samples", "diag_k", "text_eval", "cache_dir")
        return json.dumps({k: getattr(self, k) for k in fields}, sort_keys=True, default=str)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> TrainConfig:
        return build_config({**self.to_dict(), **changes})


def field_defaults() -> dict[str, Any]:
    """TrainConfig's defaults, field by field: the one place each default is written."""
    return {name: f.get_default(call_default_factory=True) for name, f in TrainConfig.model_fields.items()}


def build_config(values: Mapping[str, Any]) -> TrainConfig:
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model=TrainConfig)) from None


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return Path(str(resources.files("sage_core") / "presets" / f"{name}.yaml"))


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["lambda_esp=1.0", "des_terms=[1,2]"]`` -> dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lambda_esp=1.0")
        try:
            out[key] = load_yaml_text(raw, where=f"--set {key}") if raw.strip() else raw
        except ConfigError as exc:
            if "not valid YAML" not in str(exc) and "nested too deeply" not in str(exc):
                raise  # bounded: an alias bomb or a repeated key is refused, not passed on as text
            out[key] = raw
    return out


def read_yaml_mapping(path: str | Path, *, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path``, bounded and checked (:mod:`sage_core.defs.safe_yaml`)."""
    path = Path(path)
    data = read_yaml_file(path, what=what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file '{path}': expected a mapping of key: value, got {type(data).__name__}")
    return data


def load_config(*, preset: str | None = None, config_file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults < preset or YAML file < overrides, validated once with all problems reported."""
    if preset and config_file:
        raise ConfigError("give --preset or --config, not both")
    values: dict[str, Any] = {}
    if preset:
        values.update(read_yaml_mapping(preset_path(preset), what="preset"))
    if config_file:
        values.update(read_yaml_mapping(config_file, what="config"))
    values.update(overrides or {})
    return build_config(values)
