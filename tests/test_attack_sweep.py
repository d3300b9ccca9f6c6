"""Erasure depth in sweeps (issue 25, item 3): ``fidelity.attack`` runs the optimised attack on the live
encoder at the rungs and the final step, ``attack_depth`` ranks as an objective (a three-objective
front with matched_auc and util_sib), and the spec checks refuse what cannot work on one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sage_core.defs import metrics as registry
from sage_core.defs.errors import ConfigError
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


def _report_table(page: str) -> dict[str, dict[str, str]]:
    """The erasure-depth table of a report page: trial_id -> {column: cell text}."""
    import re

    table = page.split('<table data-section="attack_depth"', 1)[1].split("</table>", 1)[0]
    header, *body = [re.findall(r"<t[hd]>(.*?)</t[hd]>", tr, re.S)
                     for tr in re.findall(r"<tr.*?>(.*?)</tr>", table, re.S)]
    return {row[header.index("trial_id")]: dict(zip(header, row, strict=True)) for row in body}


def test_the_report_reads_each_trials_last_attacked_step(tmp_path):
    """A store without column roles: between the attack's steps attack_depth is NaN, a pruned trial's
    last attacked step is its rung, a trial whose last row carries no attack (c) shows the one before;
    no front note without the sweep's objectives; no section at all for rows without attack_depth."""
    from analysis.intervals import fmt_interval
    from analysis.report import write_report
    from analysis.store import ResultStore

    nan = float("nan")
    rows = []
    for trial, depths in {"a": (nan, 0.25, 0.5), "b": (nan, 0.75), "c": (0.5, nan)}.items():
        for step, depth in zip((2, 4, 6), depths, strict=False):   # b, c end at 4
            curve = {f"attack_recovered_at_{t}": (1 - depth) * t / 2 for t in range(3)}
            rows.append({"sweep_id": "s", "trial_id": trial, "step": step, "fidelity": "text", "util_sib": 0.9,
                         "status": "pruned" if (trial, step) == ("b", 4) else "running", "attack_depth": depth,
                         "attack_depth_lo": depth - 0.1, "attack_depth_hi": depth + 0.1,
                         "attack_steps_median": 3.0 + step, **curve})
    ResultStore(tmp_path / "results").write(rows)
    page = write_report(tmp_path, tmp_path / "report").read_text(encoding="utf-8")
    table = _report_table(page)
    assert {t: (r["step"], r["attack_depth"], r["attack_steps_median"]) for t, r in table.items()} == {
        "a": ("6", fmt_interval(0.5, 0.4, 0.6), "9"), "b": ("4", fmt_interval(0.75, 0.65, 0.85), "7"),
        "c": ("2", fmt_interval(0.5, 0.4, 0.6), "5")}
    assert "front" not in next(iter(table.values())) and "ranks by" not in page
    assert (tmp_path / "report" / "attack_curves.png").stat().st_size > 5000

    ResultStore(tmp_path / "plain" / "results").write([{k: v for k, v in r.items() if not k.startswith("attack")}
                                                       for r in rows])
    plain = write_report(tmp_path / "plain", tmp_path / "plain-report").read_text(encoding="utf-8")
    assert "Erasure depth" not in plain and not (tmp_path / "plain-report" / "attack_curves.png").exists()


# --- slow: a real sweep, checked against an independent evaluation of its checkpoints ------------
@pytest.fixture(scope="module")
def attack_sweep(tmp_path_factory) -> Path:
    """Two trials (real Ray, DeepSpeed, the Pareto scheduler at rung 4) of 6 steps, text metrics every
    2, the attack stage at the rung and the end; the folder holding the spec and ``sweep/``."""
    import ray

    import sweeps

    tmp_path = tmp_path_factory.mktemp("attack-sweep")
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
    return tmp_path


@pytest.mark.slow
def test_a_sweep_stores_attack_depth_at_the_rungs_and_the_end(attack_sweep, capsys):
    """Attack rows at steps 4 and 6, none at 2; each row's attack metrics equal a fresh
    AttackDepthEvaluator (its own cache) on the row's checkpoint; the scheduler ranked by them."""
    from analysis.store import ResultStore
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import build_eval_config
    from sage_core.evaluation.attack import AttackConfig
    from sage_core.evaluation.attack_depth import AttackDepthEvaluator
    from sweeps.cli import main
    from tests.pareto_oracle import brute_front

    tmp_path = attack_sweep
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


@pytest.mark.slow
def test_the_report_shows_erasure_depth(attack_sweep, tmp_path):
    """`sage report` on that sweep: per trial, attack_depth [lo, hi] and the median steps at its last
    attacked step as DuckDB reads them straight from the Parquet files, each trial's rank on the
    three-objective front against a brute-force front, and the success-curve plot beside the page."""
    import duckdb

    from analysis.intervals import fmt_interval, fmt_number
    from sweeps.cli import main
    from tests.pareto_oracle import brute_front

    with pytest.raises(SystemExit) as exit_:
        main(["report", str(attack_sweep / "sweep"), "--out", str(tmp_path / "report")])
    assert exit_.value.code == 0
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "<h2>Erasure depth under an optimised attack</h2>" in page
    assert "ranks by 3 objectives (matched_auc, attack_depth, util_sib)" in page
    assert 'src="attack_curves.png"' in page and (tmp_path / "report" / "attack_curves.png").stat().st_size > 5000

    shown = _report_table(page)

    files = str(attack_sweep / "sweep" / "results" / "**" / "*.parquet")
    last = duckdb.sql(
        f"SELECT trial_id, step, attack_depth, attack_depth_lo, attack_depth_hi, attack_steps_median, matched_auc, "
        f"util_sib FROM read_parquet('{files}', union_by_name = true) WHERE fidelity = 'text' AND NOT "
        "isnan(attack_depth) ORDER BY trial_id, step").df().groupby("trial_id").tail(1)
    assert set(shown) == set(last["trial_id"]) and len(last) == 2
    on_front = brute_front(last[["matched_auc", "attack_depth", "util_sib"]].to_numpy(), [1, -1, -1])
    assert f"On their front at each trial's last step: {int(on_front.sum())} of 2 trials" in page
    for (_, r), front in zip(last.iterrows(), on_front, strict=True):
        row = shown[r["trial_id"]]
        assert row["step"] == str(r["step"])
        assert row["attack_depth"] == fmt_interval(r["attack_depth"], r["attack_depth_lo"], r["attack_depth_hi"])
        assert row["attack_steps_median"] == fmt_number(r["attack_steps_median"])
        assert (row["front"] == "1") == bool(front)
