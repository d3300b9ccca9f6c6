"""The typed sweep spec: shipped specs resolve to the search spaces pinned before the change, bad
dimensions and keys come back as one error listing every problem, and the one "did you mean"
helper and formatter answer fixed cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sage_core.defs.errors import (
    AnalysisError,
    ConfigError,
    FieldProblem,
    QueryError,
    SageError,
    did_you_mean,
    format_validation_error,
    unknown_name,
)
from sweeps.space import Choice, Grid, IntRange, LogUniform, Uniform, parse_dimension, to_optuna
from sweeps.spec import base_train_config, load_spec, shipped_specs, spec_from_text, trial_count

# Recorded with the untyped spec (space as raw mappings parsed by parse_dimension), before the change.
PIN = json.loads((Path(__file__).parent / "pins" / "shipped_spec_spaces.json").read_text())


def _resolved(name: str) -> dict[str, Any]:
    spec = load_spec(name, check=False)
    dims = spec.dimensions()
    return {
        "dimensions": {k: {"kind": type(d).__name__, **d.model_dump(mode="json")} for k, d in dims.items()},
        "optuna": {k: repr(to_optuna(d)) for k, d in dims.items()},
        "trial_count": trial_count(spec),
        "to_yaml": spec.to_yaml(),
        "variants": spec.variants,
        "base_train": {k: v for k, v in base_train_config(spec).items() if k != "cache_dir"},
    }


def test_the_pin_covers_every_shipped_spec():
    assert sorted(PIN) == shipped_specs()


@pytest.mark.parametrize("name", sorted(PIN))
def test_shipped_spec_resolves_to_the_search_space_pinned_before_the_typed_spec(name):
    assert json.loads(json.dumps(_resolved(name))) == PIN[name]


def test_saved_spec_reads_back_with_the_same_dimension_models(tmp_path):
    spec = load_spec("pareto-search", check=False)
    again = spec_from_text(spec.to_yaml(), where="saved spec")
    assert again == spec
    assert {k: type(d) for k, d in again.space.items()} == {k: type(d) for k, d in spec.space.items()}


def _write(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _problems(path: Path, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_spec(path, **kw)
    return err.value.problems


def test_bad_kinds_bounds_and_keys_are_one_error_listing_every_problem(tmp_path):
    path = _write(tmp_path, {
        "include": "quickstart", "name": "bad", "storage": str(tmp_path / "s"),
        "space": {"lr": {"loguniform": [0.0, 1.0e-4]}, "alpha": {"unifrom": [0.0, 1.0]},
                  "local_k": {"int": [30, 5]}, "lamda_lsa": {"grid": [0.1]}, "lambda_esp": [0.0, 1.0],
                  "lambda_safe": {"choice": []}},
        "schedular": {"kind": "fifo"},
        "search": {"algorithm": "random", "seed": True},
        "tracking": {"kind": "tensorboard", "experimnt": "x"},
    })
    problems = _problems(path)
    expected = [
        "space.lr.loguniform={'loguniform': [0.0, 0.0001]}: low=0.0 must be > 0 on a log scale",
        "space.alpha={'unifrom': [0.0, 1.0]}: unknown kind 'unifrom' (did you mean 'uniform'?); "
        "kinds: grid, choice, uniform, loguniform, int",
        "space.local_k.int={'int': [30, 5]}: low=30 must be <= high=5",
        "space.lamda_lsa: not a TrainConfig field that a sweep may vary (did you mean 'lambda_lsa'?)",
        "space.lambda_esp=[0.0, 1.0]: write one of {grid: ...}, {choice: ...}, {uniform: ...}, {loguniform: ...}, "
        "{int: ...}, e.g. {grid: [0, 0.5, 1]}",
        "space.lambda_safe.choice=[]: List should have at least 1 item after validation, not 0",
        "search.seed=True: a boolean (true/false) is not a number; write a number",
        "unknown key 'tracking.experimnt' (did you mean 'experiment'?); allowed: kind, uri, experiment",
        "unknown key 'schedular' (did you mean 'scheduler'?); allowed: name, description, preset, train, space, "
        "variants, seeds, search, scheduler, objectives, fidelity, resources, storage, max_failures, tracking",
    ]
    assert problems[0] == f"spec 'spec.yaml' has {len(expected)} problems"
    assert sorted(problems[1:]) == sorted(expected)


def test_field_problems_and_the_checks_that_follow_them_are_reported_together(tmp_path):
    # a refused dimension, a check across fields (a variant varies a space field), the metric
    # registry (an unknown objective) and a trial config problem: all in one error
    path = _write(tmp_path, {
        "include": "quickstart", "name": "mixed", "storage": str(tmp_path / "s"),
        "space": {"alpha": {"uniform": [2.0, 1.0]}, "local_k": {"grid": [5, 40]}},
        "variants": {"A": {"local_k": 5}, "B": {}},
        "search": {"algorithm": "random"},
        "objectives": [{"metric": "concept_acu"}, {"metric": "util_sib"}],
    })
    problems = _problems(path)
    assert problems[0] == "spec 'spec.yaml' has 4 problems"
    assert problems[1:] == [
        "space.alpha.uniform={'uniform': [2.0, 1.0]}: low=2.0 must be <= high=1.0",
        "variants.A.local_k: also in space; vary it in one place",
        problems[3],  # the registry's list of ranking objectives, checked below
        "trial config (with variant='A', local_k=40): local_k=40 needs batch_size >= local_k + 1 (got "
        "batch_size=16): LSA picks K neighbours within a batch",
    ]
    assert problems[3].startswith("objectives[0].metric='concept_acu': no evaluator produces it "
                                  "(did you mean 'concept_auc'?); objectives that rank: matched_auc,")
    # without check, only what pydantic refused (nothing is read from disk or the registry)
    assert _problems(path, check=False) == ["spec 'spec.yaml': space.alpha.uniform={'uniform': [2.0, 1.0]}: "
                                            "low=2.0 must be <= high=1.0"]


def test_a_dimension_is_the_model_of_its_kind():
    assert parse_dimension("a", {"grid": [1, "x"]}) == Grid(grid=[1, "x"])
    assert parse_dimension("a", {"choice": [[1, 2]]}) == Choice(choice=[[1, 2]])
    assert parse_dimension("a", {"uniform": [0, 2]}).bounds == (0.0, 2.0)
    assert isinstance(parse_dimension("a", {"uniform": [0, 2]}), Uniform)
    assert parse_dimension("a", {"loguniform": [1e-6, 1e-4]}) == LogUniform(loguniform=(1e-6, 1e-4))
    assert parse_dimension("a", {"int": [5, 5]}) == IntRange(int=(5, 5))
    with pytest.raises(ConfigError) as err:
        parse_dimension("k", {"int": [1.5, 3]})
    assert err.value.problems == ["space.k.int[0]=1.5: Input should be a valid integer, got a number with a "
                                  "fractional part"]
    with pytest.raises(ConfigError) as err:
        parse_dimension("k", {"grid": [1], "int": [1, 2]})
    assert err.value.problems[0].startswith("space.k={'grid': [1], 'int': [1, 2]}: write one of {grid: ...}")


DID_YOU_MEAN_CASES = [
    (("lamda_esp", ["lambda_esp", "lambda_lsa", "lr"]), {}, " (did you mean 'lambda_esp'?)"),
    (("schedulr", ["scheduler", "search", "storage"]), {}, " (did you mean 'scheduler'?)"),
    (("xyz", ["scheduler", "search", "storage"]), {}, ""),
    (("asr", ["asr_text", "asr_ringabell", "tifa"]), {"n": 3, "cutoff": 0.5}, " (did you mean 'asr_text'?)"),
    (("lambda", ["lambda_esp", "lambda_lsa", "lambda_safe"]), {"n": 2}, " (did you mean 'lambda_lsa', 'lambda_esp'?)"),
    ((3, ["3", "4"]), {}, " (did you mean '3'?)"),
    (("asr_txt", ["asr_text"]), {"cutoff": 0.85}, " (did you mean 'asr_text'?)"),
    (("asr_ring", ["asr_text"]), {"cutoff": 0.85}, ""),
    (("anything", []), {}, ""),
]


@pytest.mark.parametrize("args,kw,expected", DID_YOU_MEAN_CASES)
def test_did_you_mean(args, kw, expected):
    assert did_you_mean(*args, **kw) == expected


def test_unknown_name_in_analysis_lists_close_matches_and_the_known_names():
    err = unknown_name(kind="metric", name="tfia", known=["tifa", "asr", "tifa"])
    assert str(err) == "unknown metric 'tfia' (did you mean 'tifa'?); known: asr, tifa"
    assert isinstance(err, QueryError) and isinstance(err, AnalysisError) and isinstance(err, SageError)


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(1, ge=1)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(examples=["my-run"])
    inner: list[_Inner] = []
    ratio: float = 0.5

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if value > 1:
            raise FieldProblem("must be at most 1")
        return value

    @model_validator(mode="after")
    def _named(self) -> _Outer:
        if self.name == "bad" and self.ratio == 0.5:
            raise ValueError("name='bad' with ratio=0.5: pick another | second problem")
        return self


def _lines(**values: Any) -> list[str]:
    with pytest.raises(ValidationError) as err:
        _Outer(**values)
    return format_validation_error(err.value, model=_Outer)


def test_the_formatter_names_field_value_and_what_is_allowed():
    assert _lines(inner=[{"steps": 1}, {"stpes": 2}], ratio=2.0) == [
        "name: required, e.g. my-run",
        "unknown key 'inner[1].stpes' (did you mean 'steps'?); allowed: steps",
        "ratio=2.0: must be at most 1",
    ]
    assert _lines(name="x", inner=[{"steps": 0}], nme=1) == [
        "inner[0].steps=0: Input should be greater than or equal to 1",
        "unknown key 'nme' (did you mean 'name'?); allowed: name, inner, ratio",
    ]
    # a validator's own ValueError is shown as written (it names the fields itself)
    assert _lines(name="bad") == ["name='bad' with ratio=0.5: pick another", "second problem"]
    # without the model: a flat list of names (listed only when short, as TrainConfig's are not)
    with pytest.raises(ValidationError) as err:
        _Outer(name="x", rato=1)
    assert format_validation_error(err.value, known=["name", "ratio"], what="eval key") == [
        "unknown eval key 'rato' (did you mean 'ratio'?); allowed: name, ratio"]
    assert format_validation_error(err.value, known=[f"f{i}" for i in range(21)] + ["ratio"]) == [
        "unknown key 'rato' (did you mean 'ratio'?)"]


def test_the_formatter_puts_the_path_of_a_nested_mapping_in_front():
    with pytest.raises(ValidationError) as err:
        _Outer(name="bad", inner=[{"stpes": 1}])
    assert format_validation_error(err.value, model=_Outer, where="fidelity.robust") == [
        "unknown key 'fidelity.robust.inner[0].stpes' (did you mean 'steps'?); allowed: steps"]
    with pytest.raises(ValidationError) as err:
        _Outer(name="bad", ratio=3)
    assert format_validation_error(err.value, model=_Outer, where="x") == ["x.ratio=3: must be at most 1"]


def test_refused_train_and_variant_keys_do_not_hide_the_other_problems(tmp_path):
    path = _write(tmp_path, {"include": "quickstart", "name": "keys", "storage": "/proc/no/such/place",
                             "train": {"lr_x": 1.0, "eval_every": 5}, "variants": {"A": {"lamda_esp": 1.0}, "B": {}}})
    problems = _problems(path)
    assert problems[:4] == [
        "spec 'spec.yaml' has 4 problems",
        "train.eval_every: set by the sweep from fidelity.text_every; remove it",  # yaml.safe_dump sorts keys
        "train.lr_x: unknown TrainConfig field (did you mean 'lr'?)",
        "variants.A.lamda_esp: not a TrainConfig field that a sweep may vary (did you mean 'lambda_esp'?)",
    ]
    assert problems[4].startswith("storage='/proc/no/such/place': not writable")


def test_every_check_across_fields_is_reported_with_the_field_problems(tmp_path):
    # a grid search over a sampled dimension and too many trials, next to a refused dimension;
    # the 40,000 configurations are not built (the count is said instead)
    path = _write(tmp_path, {"include": "quickstart", "name": "many", "storage": str(tmp_path / "s"),
                             "space": {"lambda_esp": {"grid": [float(i) for i in range(200)]},
                                       "alpha": {"grid": [float(i) for i in range(200)]},
                                       "lr": {"loguniform": [1e-6, 1e-4]}, "local_k": {"int": [9, 1]}},
                             "search": {"max_trials": 1000}})
    assert _problems(path) == [
        "spec 'spec.yaml' has 3 problems",
        "space.local_k.int={'int': [9, 1]}: low=9 must be <= high=1",
        "search.algorithm='grid': space dimensions ['lr'] are sampled, not grid; use {grid: [...]} or algorithm "
        "random/tpe/nsga2",
        "search: the sweep has 40,000 trials (grid points x num_samples), above search.max_trials=1,000; shrink "
        "the grid, or raise search.max_trials on purpose",
    ]


def test_load_validated_spec_returns_what_validation_covered(tmp_path):
    from sweeps.spec import load_validated_spec

    spec, coverage = load_validated_spec("quickstart", storage=str(tmp_path / "s"))
    # quickstart: lambda_esp {grid: [0, 2]} x lambda_lsa {grid: [0, 0.1]}
    assert PIN["quickstart"]["dimensions"] == {"lambda_esp": {"kind": "Grid", "grid": [0.0, 2.0]},
                                               "lambda_lsa": {"kind": "Grid", "grid": [0.0, 0.1]}}
    assert (coverage.checked, coverage.total, coverage.sampled) == (4, 4, False)
    assert spec == load_spec("quickstart", storage=str(tmp_path / "s"))
    path = _write(tmp_path, {"include": "quickstart", "name": "b", "storage": "/proc/no/such/place",
                             "space": {"alpha": {"uniform": [1.0, 0.0]}}, "search": {"algorithm": "random"}})
    with pytest.raises(ConfigError) as err:
        load_validated_spec(path)
    assert err.value.problems[1] == "space.alpha.uniform={'uniform': [1.0, 0.0]}: low=1.0 must be <= high=0.0"
    assert err.value.problems[2].startswith("storage='/proc/no/such/place': not writable")


def test_each_dimension_says_what_it_means_to_tune_and_validation():
    from ray import tune

    from sweeps.space import to_tune

    assert to_tune(parse_dimension("a", {"grid": [1, 2]})) == tune.grid_search([1, 2])
    domain = to_tune(parse_dimension("k", {"int": [5, 30]}))
    assert (domain.lower, domain.upper) == (5, 31)  # Tune's randint excludes its upper bound
    log = to_tune(parse_dimension("lr", {"loguniform": [1e-6, 1e-4]}))
    assert (log.lower, log.upper) == (1e-6, 1e-4) and type(log.sampler).__name__ == "_LogUniform"
    assert to_tune(parse_dimension("c", {"choice": [3, 4]})).categories == [3, 4]
    assert parse_dimension("k", {"int": [5, 5]}).corner_values() == [5]
    assert parse_dimension("a", {"uniform": [0, 2]}).corner_values() == [0.0, 2.0]
