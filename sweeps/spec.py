"""``SweepSpec``: one sweep as data (YAML in ``sweeps/specs/``), validated before Ray starts.

A spec may inherit another with ``include: <name or path>`` (alias ``base:``): mappings merge
key by key, the child wins, and ``space`` / ``objectives`` / lists are replaced as a whole, so an
ablation lists only what it varies. Precedence: ``--set`` > the spec file > what it includes >
the defaults of the models. ``load_spec`` reports every problem at once, each naming the field,
the value and what is allowed.

This module reads specs; the models are :mod:`sweeps.spec_model`, the checks that read the
registry, files and storage :mod:`sweeps.spec_checks`; their public names are re-exported here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sage_core.defs.config import TrainConfig, read_yaml_mapping
from sage_core.defs.errors import ConfigError, did_you_mean, format_validation_error
from sage_core.defs.safe_yaml import load_yaml_text

from .space import finite_points, grid_size
from .spec_checks import (
    MAX_VALIDATED_COMBINATIONS,
    Coverage,
    combination_count,
    spec_error,
    spec_problems,
    validate_spec,
)
from .spec_model import (
    DEFAULT_MAX_TRIALS,
    DEFER_CROSS_FIELD_CHECKS,
    IMAGE_METRICS,
    TEXT_METRICS,
    VARIANT,
    FidelityPlan,
    ImageStage,
    Objective,
    Resources,
    SchedulerConfig,
    SearchConfig,
    SweepSpec,
    Tracking,
    base_train_config,
    is_uri,
    trial_count,
    trial_values,
)

__all__ = ["SweepSpec", "Objective", "SearchConfig", "SchedulerConfig", "FidelityPlan", "ImageStage",
           "Resources", "Tracking", "SPECS_DIR", "resolve_spec_path", "load_spec", "validate_spec", "shipped_specs",
           "TEXT_METRICS", "IMAGE_METRICS", "apply_overrides", "base_train_config",
           "is_uri", "MAX_VALIDATED_COMBINATIONS", "VARIANT", "trial_values", "describe", "Coverage",
           "spec_from_text", "DEFAULT_MAX_TRIALS", "trial_count", "combination_count", "resolve_include",
           "load_validated_spec"]

SPECS_DIR = Path(__file__).parent / "specs"


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
    out = copy.deepcopy(values)
    for key, value in overrides.items():
        _set_path(out, key, value)
    return out


def load_spec(name_or_path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None,
              storage: str | None = None, check: bool = True) -> SweepSpec:
    """Read a spec (with includes), apply ``--set`` overrides and ``--storage``; with ``check``,
    validate it (:func:`validate_spec`), reporting every problem in one error."""
    if check:
        return load_validated_spec(name_or_path, overrides=overrides, storage=storage)[0]
    path, values = _read_values(name_or_path, overrides=overrides, storage=storage)
    try:
        return SweepSpec(**values)
    except ValidationError as exc:
        raise spec_error(format_validation_error(exc, model=SweepSpec), name=path.name) from None


def load_validated_spec(name_or_path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None,
                        storage: str | None = None) -> tuple[SweepSpec, Coverage]:
    """:func:`load_spec` with every check, and which configurations validation built (for
    ``sage sweep validate``). Problems the models refuse and those the checks find after them
    (registry, trial configs, storage) come in one error."""
    path, values = _read_values(name_or_path, overrides=overrides, storage=storage)
    try:
        spec = SweepSpec(**values)
    except ValidationError as exc:
        problems = format_validation_error(exc, model=SweepSpec)
        salvaged = _salvage(values, exc)
        if salvaged is not None:
            more = salvaged.cross_field_problems() + spec_problems(salvaged)[0]
            problems += [p for p in more if p not in problems]
        raise spec_error(problems, name=path.name) from None
    problems, plan = spec_problems(spec)
    if problems:  # named after the file given, not the `name:` it may inherit from an include
        raise spec_error(problems, name=path.name)
    return spec, plan.coverage


def _read_values(name_or_path: str | os.PathLike, *, overrides: Mapping[str, Any] | None,
                 storage: str | None) -> tuple[Path, dict[str, Any]]:
    path = resolve_spec_path(name_or_path)
    values = _read_with_includes(path)
    values.setdefault("name", path.stem)
    values = apply_overrides(values, overrides or {})
    if storage is not None:
        values["storage"] = storage
    return path, values


def _salvage(values: Mapping[str, Any], exc: ValidationError) -> SweepSpec | None:
    """The spec without the ``space`` / ``variants`` / ``train`` entries pydantic refused and with
    the checks across fields deferred, so that every other check still runs on the rest; None
    when other parts failed."""
    pruned = {k: (dict(v) if k in ("space", "variants", "train") and isinstance(v, Mapping) else v)
              for k, v in values.items()}
    for loc in (err["loc"] for err in exc.errors()):
        if len(loc) >= 2 and loc[0] in ("space", "variants", "train") and isinstance(pruned[loc[0]], dict):
            pruned[loc[0]].pop(loc[1], None)
    search = values.get("search")
    if values.get("space") and not pruned.get("space") and isinstance(search, Mapping) and \
            search.get("algorithm") in ("tpe", "nsga2"):
        return None  # Optuna would then complain of an empty space, which the user did not write
    try:
        return SweepSpec.model_validate(pruned, context=DEFER_CROSS_FIELD_CHECKS)
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
        raise spec_error(format_validation_error(exc, model=SweepSpec), name=where) from None


def describe(spec: SweepSpec, coverage: Coverage | None = None) -> str:
    """One paragraph for ``sage sweep validate`` (with what validation covered, when given)."""
    dims = spec.dimensions()
    n = grid_size(dims) * spec.search.num_samples
    kind = "grid points x repeats" if spec.search.algorithm == "grid" else "samples"
    if spec.search.algorithm in ("tpe", "nsga2"):  # Optuna draws num_samples; a grid is a categorical there
        points = finite_points(dims)
        n = spec.search.num_samples if points is None else min(spec.search.num_samples, len(points))
        if points is not None and len(points) < spec.search.num_samples:
            kind = f"samples: the space has {len(points)} configuration(s) and none runs twice"
    objs = ", ".join(f"{o.resolved_mode} {o.metric}" for o in spec.objectives)
    eta = f" (eta {spec.scheduler.eta})" if spec.scheduler.kind == "pareto_sh" else ""
    return (f"spec '{spec.name}' is valid: {n} trial(s) ({kind}), search {spec.search.algorithm}, "
            f"scheduler {spec.scheduler.kind}{eta}, objectives: {objs}; "
            f"varies {', '.join(dims) or 'nothing'}; storage {spec.storage}"
            + (f"; {coverage}" if coverage is not None else ""))

