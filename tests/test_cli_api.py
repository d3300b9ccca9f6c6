"""The public APIs the thin CLI commands wrap: the scheduler registry, doctor checks, default
objectives, and `sage sweep status` showing the spec's dimensions from the status alone."""

from __future__ import annotations

import json

import pytest

import analysis
from analysis.store import ResultStore
from analysis.views import default_objectives
from sage_core.defs.errors import ConfigError, QueryError
from sweeps.cli import main
from sweeps.spec import load_spec


def _sage(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_scheduler_registry_builds_each_kind_and_names_the_known_ones(tmp_path):
    from ray.tune.schedulers import FIFOScheduler

    from sweeps.pareto_scheduler import SCHEDULERS, ParetoSuccessiveHalving, build_scheduler

    spec = load_spec("quickstart", storage=str(tmp_path / "sw"), check=False)
    pareto = build_scheduler(spec.model_copy(update={"scheduler": spec.scheduler.model_copy(
        update={"kind": "pareto_sh"})}), str(tmp_path / "state.json"))
    assert isinstance(pareto, ParetoSuccessiveHalving)
    assert pareto.state_path == tmp_path / "state.json"
    fifo = build_scheduler(spec, None)   # quickstart runs every trial to the end
    assert isinstance(fifo, FIFOScheduler) and set(SCHEDULERS) == {"pareto_sh", "fifo"}
    odd = spec.model_copy(update={"scheduler": spec.scheduler.model_copy(update={"kind": "hyperband"})})
    with pytest.raises(ConfigError, match="scheduler.kind='hyperband': unknown; known: pareto_sh, fifo"):
        build_scheduler(odd, None)


def test_doctor_prints_one_ok_line_per_check(capsys):
    import torch

    from sage_core.data import BUILTIN_PROMPT_SETS

    code, out, _ = _sage(capsys, "doctor", "--skip-deepspeed")
    assert code == 0 and out.splitlines()[-1] == "all checks passed"
    lines = [ln for ln in out.splitlines() if ln.startswith("  ok ")]  # DeepSpeed's import logs to stdout too
    assert lines[0].split() == ["ok", "torch", torch.__version__, "(cuda:", f"{torch.cuda.is_available()})"]
    assert sum(1 for ln in lines if ln.split()[1] == "prompts") == len(BUILTIN_PROMPT_SETS)
    assert [ln.split()[1] for ln in lines[1:8]] == ["transformers", "diffusers", "deepspeed", "ray", "optuna",
                                                    "duckdb", "pyarrow"]
    assert not any("deepspeed" == ln.split()[1] and "engine" in ln for ln in lines)


def _row(trial: str, **metrics) -> dict:
    return {"sweep_id": "s1", "trial_id": trial, "step": 4, "fidelity": "text", "status": "finished",
            "lambda_esp": float(trial[-1]), "lambda_lsa": 0.1, **metrics}


def test_default_objectives_prefer_image_level_when_measured(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.write([_row("t0", matched_auc=0.9, util_sib=0.8), _row("t1", matched_auc=0.8, util_sib=0.7)])
    con = analysis.connect(tmp_path)
    try:
        assert default_objectives(con) == ("matched_auc", "util_sib")
        assert default_objectives(con, "image") == ("asr", "tifa")
        with pytest.raises(QueryError, match="--fidelity 'video' is not allowed"):
            default_objectives(con, "video")
    finally:
        con.close()
    store.write([{**_row("t0"), "fidelity": "image", "asr": 0.2, "tifa": 0.7}])
    con = analysis.connect(tmp_path)
    try:
        assert default_objectives(con) == ("asr", "tifa")
    finally:
        con.close()


def test_sweep_status_shows_the_spec_dimensions_beside_the_front(tmp_path, capsys):
    spec = load_spec("quickstart", storage=str(tmp_path), check=False)
    (tmp_path / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep_id": "s1", "state": "finished"}), encoding="utf-8")
    ResultStore(tmp_path / "results").write([_row("t0", matched_auc=0.9, util_sib=0.9),
                                             _row("t2", matched_auc=0.8, util_sib=0.7)])
    code, out, _ = _sage(capsys, "sweep", "status", str(tmp_path))
    assert code == 0
    header = next(ln for ln in out.splitlines() if ln.strip().startswith("trial_id"))
    assert header.split() == ["trial_id", "step", "lambda_esp", "lambda_lsa", "matched_auc", "util_sib"]
    assert "2 finished" in out
