"""The metric registry is the only place that names a metric's direction, and everything that ranks reads it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from sage_core.defs import metrics as registry

ROOT = Path(__file__).resolve().parents[1]
DIRECTION_WORDS = {"min", "max", "minimize", "maximize", "minimise", "maximise"}
SOURCE_DIRS = ("sage_core", "sweeps", "analysis", "bench")


def _sources():
    for d in SOURCE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            if path != ROOT / "sage_core" / "defs" / "metrics.py":
                yield path


def _is_metric_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and registry.is_metric(node.value)


def _is_direction(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in DIRECTION_WORDS


def test_no_direction_is_written_outside_the_registry():
    """A dict entry ``{"asr_text": "min"}`` or a pair ``("util_sib", "max")`` anywhere but the registry fails."""
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Dict):
                pairs = list(zip(node.keys, node.values))
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
                pairs = [(node.elts[0], node.elts[1])]
            for key, value in pairs:
                if key is not None and _is_metric_name(key) and _is_direction(value):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {key.value!r} -> {value.value!r}")
    assert offenders == []


def test_the_scanner_catches_a_direction_written_elsewhere(tmp_path):
    """The check above can fail: the same walk flags a planted table."""
    planted = ast.parse('DIRECTIONS = {"concept_auc": "min", "tifa": "maximize"}\nPAIR = ("util_sib", "max")')
    hits = [n for n in ast.walk(planted) if isinstance(n, (ast.Dict, ast.Tuple))]
    found = sum(_is_metric_name(k) and _is_direction(v) for n in hits
                for k, v in (zip(n.keys, n.values) if isinstance(n, ast.Dict) else [tuple(n.elts)]))
    assert found == 3


@pytest.mark.parametrize("spec_path", sorted((ROOT / "sweeps" / "specs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spec_modes_agree_with_the_registry(spec_path):
    spec = yaml.safe_load(spec_path.read_text())
    for obj in spec.get("objectives", []):
        entry = registry.lookup(obj["metric"])
        assert entry is not None and entry.objective, obj
        if "mode" in obj:
            assert obj["mode"] == entry.mode


def test_directions_families_and_intervals():
    assert registry.direction("concept_auc") == "minimize"
    assert registry.direction("concept_auc_i2p_sexual") == "minimize"
    assert registry.direction("util_sib_color") == "maximize"
    assert registry.direction("tifa_drop") == "minimize" and registry.direction("tifa_color") == "maximize"
    assert registry.direction("spread_ratio") == "target" and registry.lookup("spread_ratio").target == 1.0
    # interval columns are not metrics, even where a family prefix would match them
    assert not registry.is_metric("asr_text_lo") and registry.is_interval_column("asr_text_lo")
    assert not registry.is_metric("concept_auc_hi") and registry.is_interval_column("concept_auc_hi")
    assert registry.interval_columns("util_sib") == ("util_sib_lo", "util_sib_hi")
    with pytest.raises(Exception, match="spread_dev"):
        registry.sign("spread_ratio")
    with pytest.raises(Exception, match="did you mean"):
        registry.direction("concept_acu")


def test_every_text_column_the_evaluator_writes_is_registered(text_metrics_of_copy):
    """Each key of ``TextEvaluator(...)(aligned)`` is a registered metric, its interval, or a ``base_`` figure."""
    unregistered = [k for k in text_metrics_of_copy
                    if not (registry.is_metric(k) or registry.is_interval_column(k) or k.startswith("base_"))]
    assert unregistered == []
    for name in registry.objective_metrics("text"):
        assert name in text_metrics_of_copy, name
        lo, hi = registry.interval_columns(name)
        if name not in ("spread_dev", "jaccard"):
            assert text_metrics_of_copy[lo] <= text_metrics_of_copy[name] <= text_metrics_of_copy[hi], name


@pytest.mark.parametrize("name", ["quickstart", "paper-default", "pareto-search", "ablation-components",
                                  "ablation-components-cpu", "ablation-lambda-esp-cpu"])
def test_shipped_specs_rank_by_the_graded_defaults(name):
    """The shipped sweeps rank by the registry's default objectives (graded, sensitivity-tested),
    in the registry's directions: not by the saturating asr_text/util_text."""
    from sweeps.spec import load_spec

    spec = load_spec(name, check=False)
    assert tuple(spec.objective_metrics()) == registry.DEFAULT_OBJECTIVES
    assert spec.objective_modes() == [registry.mode(m) for m in registry.DEFAULT_OBJECTIVES] == ["min", "max"]
