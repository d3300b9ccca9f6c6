"""schema.json: the column roles a sweep declares (vs its spec), and analysis reading them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import analysis
from analysis.ablation import ablation_frame
from analysis.column_roles import ColumnRoles
from analysis.store import ResultStore
from sage_core.defs.columns import BOOKKEEPING_COLUMNS
from sage_core.defs.config import TrainConfig
from sage_core.defs.errors import QueryError, StorageError
from sweeps.schema_file import write_schema
from sweeps.spec import load_spec
from sweeps.sweep_dir import SweepDir
from sweeps.sweep_plan import build_plan

PRESETS = Path(__file__).resolve().parents[1] / "sage_core" / "presets"


def test_quickstart_roles_match_its_spec_and_preset(tmp_path):
    spec = load_spec("quickstart", storage=str(tmp_path / "sw"), check=False)
    folder = SweepDir.at(str(tmp_path / "sw"))
    roles = write_schema(folder, spec=spec, sweep_id="q-1", plan=build_plan(spec))
    assert ColumnRoles.from_json((tmp_path / "sw" / "schema.json").read_text(), where="x") == roles
    assert roles.varied == ("lambda_esp", "lambda_lsa")  # quickstart's two dimensions (README)
    assert roles.objectives == ("matched_auc", "util_sib")
    assert roles.metrics == {"matched_auc": "minimize", "util_sib": "maximize"}
    assert {"lambda_esp", "lambda_lsa", "local_k", "alpha", "lambda_safe", "method"} <= set(roles.hyperparameters)
    assert not set(roles.hyperparameters) & ({"cache_dir"} | set(BOOKKEEPING_COLUMNS))
    # defaults: the preset's values where it sets them, TrainConfig's own defaults elsewhere
    preset = yaml.safe_load((PRESETS / f"{spec.preset}.yaml").read_text())
    for name in ("lambda_esp", "lambda_lsa", "local_k", "alpha", "lambda_safe", "lr", "batch_size"):
        want = preset.get(name, spec.train.get(name, TrainConfig.model_fields[name].default))
        assert roles.defaults[name] == want, name


def _grid_rows() -> list[dict]:
    """lambda_esp {0, 2} x local_k {5, 10}; util = lambda_esp / 10 + local_k / 100 (by hand below)."""
    rows = []
    for esp in (0.0, 2.0):
        for k in (5, 10):
            rows.append({"sweep_id": "g", "trial_id": f"e{esp:g}-k{k}", "step": 10, "fidelity": "text",
                         "status": "finished", "method": "sage", "lambda_esp": esp, "local_k": k,
                         "extra_knob": 1.0, "concept_auc": 0.5, "util_sib": esp / 10 + k / 100})
    return rows


def _roles(**defaults) -> ColumnRoles:
    return ColumnRoles(sweep_id="g", hyperparameters=("method", "lambda_esp", "local_k"),
                       varied=("lambda_esp", "local_k"), metrics={"util_sib": "maximize"},
                       objectives=("util_sib",), bookkeeping=BOOKKEEPING_COLUMNS, defaults=defaults)


def test_ablation_holds_the_others_at_the_declared_base_config(tmp_path):
    ResultStore(tmp_path / "results").write(_grid_rows())
    # No schema.json: the old inference (paper default local_k = 15 is in no trial).
    with pytest.raises(QueryError, match="no trials have local_k at its default 15"):
        ablation_frame(tmp_path, param="lambda_esp")
    assert list(ablation_frame(tmp_path, param="extra_knob", defaults={"local_k": 5})["extra_knob"]) == [1.0]
    (tmp_path / "schema.json").write_text(_roles(local_k=5, lambda_esp=2.0, method="sage").to_json())
    table = ablation_frame(tmp_path, param="lambda_esp")
    assert list(table["lambda_esp"]) == [0.0, 2.0] and list(table["n"]) == [1, 1]
    assert list(table["util_sib"]) == pytest.approx([0.0 + 0.05, 0.2 + 0.05])  # local_k = 5 rows
    assert table.attrs["notes"] == ["local_k = 5"]
    # extra_knob is not declared: no longer guessed to be a hyperparameter
    with pytest.raises(QueryError, match="unknown hyperparameter 'extra_knob'"):
        ablation_frame(tmp_path, param="extra_knob")


def test_a_damaged_schema_file_is_one_line_naming_it(tmp_path):
    ResultStore(tmp_path / "results").write(_grid_rows())
    (tmp_path / "schema.json").write_text('{"format": "sage-sweeps column roles", "varied": [1]')
    with pytest.raises(StorageError, match="schema.json: not valid JSON"):
        analysis.connect(tmp_path)
    (tmp_path / "schema.json").write_text('{"format": "sage-sweeps column roles", "varied": [1]}')
    with pytest.raises(StorageError, match=r"schema.json: varied=\[1\] is not allowed"):
        analysis.connect(tmp_path)
