"""Erasure depth in sweeps (issue 25, item 3): ``fidelity.attack`` runs the optimised attack on the live
encoder at the rungs and the final step, ``attack_depth`` ranks as an objective (a three-objective
front with matched_auc and util_sib), and the spec checks refuse what cannot work on one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis import metrics as registry
from sage_core.errors import ConfigError
from tests.conftest import TINY_TEXT_EVAL
from tests.test_sweep_run import tiny_spec

THREE = [{"metric": "matched_auc"}, {"metric": "attack_depth"}, {"metric": "util_sib"}]
#: A small attack on the tiny CLIP (seconds per evaluation).
TINY_ATTACK = {"prompts": 8, "steps": 3, "candidates": 4, "top_k": 8}


def _problems(tmp_path: Path, **changes) -> str:
    from sweeps.spec import load_spec
    from sweeps.spec_checks import validate_spec

    with pytest.raises(ConfigError) as err:
        validate_spec(load_spec(str(tiny_spec(tmp_path, **changes)), storage=str(tmp_path / "s")))
    return str(err.value)


# --- fast: the registry and the spec checks -----------------------------------------------------
def test_attack_depth_ranks_higher_is_better():
    entry = registry.lookup("attack_depth")
    assert entry is not None and entry.objective and entry.fidelity == "attack"
    assert registry.sign("attack_depth") == -1 and registry.mode("attack_depth") == "max"
    assert "attack_depth" in registry.objective_metrics("attack")
    assert "attack_depth" not in registry.objective_metrics("text")  # never expected from the text evaluator


def test_an_attack_objective_needs_the_attack_stage_one_line(tmp_path, capsys):
    from sweeps.cli import main

    path = tiny_spec(tmp_path, objectives=THREE)
    capsys.readouterr()  # building the tiny encoder prints progress
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "validate", str(path), "--storage", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "objectives[1].metric='attack_depth': measured by the attack stage; add fidelity.attack" in err
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_three_objective_spec_with_the_stage_validates(tmp_path):
    from sweeps.spec import load_spec
    from sweeps.spec_checks import validate_spec

    spec = load_spec(str(tiny_spec(tmp_path, objectives=THREE, fidelity={"text_every": 2, "rungs": [2],
                                                                        "attack": {"steps": 2}})),
                     storage=str(tmp_path / "s"))
    validate_spec(spec)
    assert spec.objective_modes() == ["min", "max", "max"]
    assert spec.fidelity.attack_steps() == [2] and spec.fidelity.attack_settings() == {"steps": 2}


@pytest.mark.parametrize(("attack", "rungs", "expected"), [
    ({"stpes": 3}, [2], "unknown key 'fidelity.attack.stpes'"),
    ({"steps": 0}, [2], "fidelity.attack.steps=0"),
    ({"mode": "words"}, [2], "fidelity.attack.mode='words'"),
    ({"n_tokens": 14}, [2], "fidelity.attack.n_tokens=14: larger than the trials' 16-token sequences"),
    ({"at": [3]}, [2], "fidelity.attack.at=[3]: must be a strictly increasing list of steps, multiples of "
                       "fidelity.text_every=2"),
    ({"at": [4, 2]}, [2], "fidelity.attack.at=[4, 2]: must be a strictly increasing"),
    ({"at": [4]}, [2], "fidelity.attack.at=[4]: objective 'attack_depth' ranks at the rungs [2] too"),
    ({"at": [2]}, None, "fidelity.attack.at=[2]: objective 'attack_depth' ranks at every text evaluation"),
])
def test_bad_attack_settings_name_the_field(tmp_path, attack, rungs, expected):
    fidelity = {"text_every": 2, "attack": attack, **({"rungs": rungs} if rungs else {})}
    text = _problems(tmp_path, objectives=THREE, fidelity=fidelity)
    assert expected in text


def test_the_stage_runs_at_its_steps_and_the_final_one():
    from sweeps.robust_stage import TrialStages

    at_rungs = TrialStages(None, robust=None, proximal=None, attack={}, attack_at=[2, 6])
    assert [s for s in (2, 4, 6, 8) if at_rungs.attacks_at(s, final=s == 8)] == [2, 6, 8]
    every = TrialStages(None, robust=None, proximal=None, attack={"steps": 2}, attack_at=None)
    assert all(every.attacks_at(s, final=False) for s in (2, 4))
    assert not TrialStages(None, robust=None, proximal=None).attacks_at(8, final=True)


# --- slow: a real sweep, checked against an independent evaluation of its checkpoints ------------
@pytest.mark.slow
def test_a_sweep_stores_attack_depth_at_the_rungs_and_the_end(tmp_path, capsys):
    """Two trials (real Ray, DeepSpeed, the Pareto scheduler at rung 4) of 6 steps, text metrics every
    2: attack rows at steps 4 and 6, none at 2; each row's attack metrics equal a fresh
    AttackDepthEvaluator (its own cache) on the row's checkpoint; the scheduler ranked by them."""
    import ray

    import sweeps
    from analysis.store import ResultStore
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import build_eval_config
    from sage_core.evaluation.attack import AttackConfig
    from sage_core.evaluation.attack_depth import AttackDepthEvaluator
    from sweeps.cli import main
    from tests.pareto_oracle import brute_front

    spec = tiny_spec(tmp_path, train={"cache_dir": str(tmp_path / "cache"), "max_steps": 6},
                     space={"lambda_esp": {"uniform": [0.0, 2.0]}}, objectives=THREE,
                     search={"algorithm": "tpe", "num_samples": 2, "max_concurrent": 2, "seed": 0},
                     scheduler={"kind": "pareto_sh", "eta": 2},
                     fidelity={"text_every": 2, "rungs": [4], "attack": TINY_ATTACK})
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        outcome = sweeps.run(str(spec), progress=False)
    finally:
        ray.shutdown()
    assert outcome.state == "finished"
    rows = ResultStore(tmp_path / "sweep" / "results").read().to_pylist()
    attacked = {(r["trial_id"], r["step"]) for r in rows if r.get("attack_depth_lo") is not None}
    assert {s for _, s in attacked} <= {4, 6} and {(t, 4) for t in {r["trial_id"] for r in rows}} <= attacked
    # between the attack's steps the objective is NaN (not measured; Tune needs every objective named)
    assert any(r["step"] == 2 for r in rows) and all(math.isnan(r["attack_depth"]) for r in rows if r["step"] == 2)
    assert any(r["step"] == 6 for r in rows) and all((r["trial_id"], 6) in attacked for r in rows if r["step"] == 6)

    base = load_encoder(str(tmp_path / "enc"), max_length=16)
    ev = AttackDepthEvaluator(base, build_eval_config({"concept": "nudity", **TINY_TEXT_EVAL}),
                              AttackConfig(**TINY_ATTACK), cache_dir=tmp_path / "fresh-cache")
    for r in (r for r in rows if (r["trial_id"], r["step"]) in attacked):
        again = ev(load_encoder(r["checkpoint"], max_length=16))
        stored = {k: r[k] for k in again}
        assert stored == pytest.approx(again, abs=1e-12), (r["trial_id"], r["step"])
        assert r["attack_depth_lo"] <= r["attack_depth"] <= r["attack_depth_hi"]

    state = json.loads((tmp_path / "sweep" / "scheduler_state.json").read_text())
    assert state["metrics"] == ["matched_auc", "attack_depth", "util_sib"]
    at_rung = {r["trial_id"]: r for r in rows if r["step"] == 4}
    assert set(state["recorded"]["4"]) == set(at_rung)
    for trial_id, vector in state["recorded"]["4"].items():
        r = at_rung[trial_id]
        assert vector == pytest.approx([r["matched_auc"], -r["attack_depth"], -r["util_sib"]], abs=1e-12)

    # sage pareto: the three-objective front of each trial's last step, against a brute-force front
    last = {}
    for r in sorted(rows, key=lambda r: r["step"]):
        last[r["trial_id"]] = r
    vals = [[r[m["metric"]] for m in THREE] for r in last.values()]
    on_front = int(brute_front(np.asarray(vals), [1, -1, -1]).sum())
    with pytest.raises(SystemExit) as exit_:
        main(["pareto", str(tmp_path / "sweep"), "--x", "matched_auc", "--y", "util_sib", "--extra", "attack_depth"])
    assert exit_.value.code == 0
    assert f"{on_front} of {len(last)} trials on the front" in capsys.readouterr().out
