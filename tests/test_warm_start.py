"""Warm starts (``sage sweep run SPEC --warm-start DIR``): an earlier sweep's stored results seed the
search. The loader and the checks run on earlier sweep folders written with the runner's own row
function (``store_callback.result_row``) and the real results store; the end-to-end tests run real
tiny sweeps (real Ray, DeepSpeed on CPU, Optuna, Parquet) one after the other."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.hostile_world import refuse
from tests.test_sweep_run import tiny_spec

EARLIER_ID = "tiny-earlier-1"
GRADED = [{"metric": "concept_auc", "mode": "min"}, {"metric": "util_sib", "mode": "max"}]


def _values(i: int, step: int) -> dict[str, float]:
    """Objective values of earlier trial ``i`` at ``step`` (any numbers the loader must carry through)."""
    return {"asr_text": round(0.5 - 0.05 * i - 0.01 * step, 6), "util_text": round(0.6 + 0.03 * i + 0.02 * step, 6)}


#: Earlier trials: params, steps reported, status of the last row.
EARLIER = [
    ({"lambda_esp": 0.0, "lambda_lsa": 0.0, "lr": 1e-3}, (2, 4), "finished"),
    ({"lambda_esp": 2.0, "lambda_lsa": 0.1, "lr": 1e-3}, (2,), "pruned"),
    ({"lambda_esp": 2.0, "lambda_lsa": 0.0, "lr": 1e-3}, (2, 4), "finished"),
    ({"lambda_esp": 8.0, "lambda_lsa": 0.0, "lr": 1e-3}, (2, 4), "finished"),   # outside the new space
    ({"lambda_esp": 0.0, "lambda_lsa": 0.1, "lr": 1e-4}, (2, 4), "finished"),   # another fixed lr
    ({"lambda_esp": 0.0, "lambda_lsa": 0.1, "lr": 1e-3}, (2,), "failed"),
]


def _earlier_folder(root: Path, trials=EARLIER, *, unwritten: dict | None = None, **changes) -> Path:
    """An earlier sweep's folder as the runner leaves it: spec.yaml, sweep.json, result rows.
    ``unwritten``: column -> ``"absent"`` / ``"null"``, a setting older code did not store (absent from
    its rows, or null there because a later file of the same sweep added the column)."""
    from analysis.store import ResultStore
    from sweeps.resolved_trial import resolve_trial
    from sweeps.spec import base_train_config, load_spec
    from sweeps.store_callback import result_row
    from sweeps.sweep_dir import SweepDir

    space = {"lambda_esp": {"grid": [0.0, 2.0, 8.0]}, "lambda_lsa": {"grid": [0.0, 0.1]}, "lr": {"grid": [1e-3, 1e-4]}}
    path = tiny_spec(root, storage=str(root / "earlier"), space=space, **changes)
    spec = load_spec(path)
    folder = SweepDir.at(spec.storage)
    Path(folder.root).mkdir()
    folder.write_spec(spec.to_yaml())
    Path(folder.meta_file).write_text(json.dumps({"sweep_id": EARLIER_ID, "name": "tiny", "state": "finished"}))
    base, rows = base_train_config(spec), []
    for i, (params, steps, status) in enumerate(trials):
        trial = resolve_trial(f"e{i}", params, base=base, variants={})
        for step in steps:
            # the trainer reports the guidance scale it derived from concept_guidance_ratio (the spec's None)
            result = {"step": step, "concept_guidance_scale": 18.1 + i, **_values(i, step)}
            rows.append(result_row(sweep_id=EARLIER_ID, trial=trial, result=result,
                                   status=status if step == steps[-1] else "running", code_version="test"))
    for column, how in (unwritten or {}).items():
        for row in rows:
            del row[column]
            if how == "null":
                row[column] = None
    ResultStore(folder.results).write(rows)
    path.rename(root / "earlier.yaml")
    return Path(folder.root)


def _new_spec(root: Path, name: str = "new.yaml", **changes) -> Path:
    changes.setdefault("space", {"lambda_esp": {"grid": [0.0, 2.0, 4.0]}, "lambda_lsa": {"grid": [0.0, 0.1]}})
    path = tiny_spec(root, storage=str(root / "new"), **changes)
    return path.rename(root / name)


def test_loader_reads_params_finals_and_rungs_and_counts_what_it_drops(tmp_path):
    from sweeps.spec import load_spec
    from sweeps.warm_start import PriorTrial, load_prior

    earlier = _earlier_folder(tmp_path)
    prior = load_prior(str(earlier), load_spec(_new_spec(tmp_path)))
    assert prior.sweep_id == EARLIER_ID
    assert prior.trials == (
        PriorTrial(params={"lambda_esp": 0.0, "lambda_lsa": 0.0}, metrics=_values(0, 4),
                   rungs={2: _values(0, 2), 4: _values(0, 4)}),
        PriorTrial(params={"lambda_esp": 2.0, "lambda_lsa": 0.1}, metrics={}, rungs={2: _values(1, 2)}),
        PriorTrial(params={"lambda_esp": 2.0, "lambda_lsa": 0.0}, metrics=_values(2, 4),
                   rungs={2: _values(2, 2), 4: _values(2, 4)}),
    )
    assert prior.dropped == {"lambda_esp=8.0 outside this spec's space (grid [0.0, 2.0, 4.0])": 1,
                             "lr=0.0001 where this spec trains with 0.001": 1, "failed in the earlier sweep": 1}
    assert [r["step"] for r in prior.rows_of(prior.trials[2:])] == [2, 4]
    assert prior.summary().endswith("3 earlier trial(s) (2 finished, 1 stopped early); 3 dropped: "
                                    "failed in the earlier sweep (1); lambda_esp=8.0 outside this spec's space "
                                    "(grid [0.0, 2.0, 4.0]) (1); lr=0.0001 where this spec trains with 0.001 (1)")


def test_trials_the_earlier_sweep_reused_from_its_own_warm_start_count_as_its_own(tmp_path):
    """Warm starts chain: rows a grid warm start copied into the earlier sweep's store (under the id of
    the sweep that trained them) are its trials too, unless they were trained in another context."""
    from analysis.store import ResultStore
    from sweeps.resolved_trial import resolve_trial
    from sweeps.search import build_search
    from sweeps.spec import base_train_config, load_spec
    from sweeps.store_callback import result_row
    from sweeps.warm_start import PriorTrial, load_prior

    earlier = _earlier_folder(tmp_path)
    base = base_train_config(load_spec(tmp_path / "earlier.yaml"))
    first = resolve_trial("f0", {"lambda_esp": 4.0, "lambda_lsa": 0.0, "lr": 1e-3}, base=base, variants={})
    elsewhere = resolve_trial("f1", {"lambda_esp": 4.0, "lambda_lsa": 0.1, "lr": 1e-3}, base=base, variants={})
    copied = [result_row(sweep_id="tiny-first-0", trial=t, result={"step": 4, **_values(9, 4)}, status="finished",
                         code_version="test") for t in (first, elsewhere)]
    copied[1]["encoder"] = "/elsewhere/encoder"  # trained in another context: never used
    ResultStore(earlier / "results").write(copied)

    spec = load_spec(_new_spec(tmp_path))
    prior = load_prior(str(earlier), spec)
    assert len(prior.trials) == 4 and prior.trials[3] == PriorTrial(
        params={"lambda_esp": 4.0, "lambda_lsa": 0.0}, metrics=_values(9, 4), rungs={4: _values(9, 4)})
    assert prior.dropped["rows of sweep tiny-first-0 trained with encoder='/elsewhere/encoder'"] == 1
    plan = build_search(spec, prior=prior.trials)  # (0, 0), (2, 0) and now (4, 0) finished earlier
    assert plan.num_samples == 6 - 3 and plan.reused == (prior.trials[0], prior.trials[2], prior.trials[3])
    assert [(r["sweep_id"], r["trial_id"]) for r in prior.rows_of(plan.reused[2:])] == [("tiny-first-0", "f0")]


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2"])
def test_optuna_study_holds_the_earlier_trials_before_the_first_suggestion(tmp_path, algorithm):
    from optuna.trial import TrialState

    from sweeps.search import build_search
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = _earlier_folder(tmp_path)
    spec = load_spec(_new_spec(tmp_path, space={"lambda_esp": {"uniform": [0.0, 4.0]},
                                                "lambda_lsa": {"choice": [0.0, 0.1]}},
                               search={"algorithm": algorithm, "num_samples": 4, "max_concurrent": 1}))
    prior = load_prior(str(earlier), spec)
    search = build_search(spec, prior=prior.trials).search_alg
    study = search._ot_study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert [t.params for t in study.trials] == [{k: v for k, v in p.items() if k != "lr"} for p, _, _ in EARLIER[:3]]
    assert study.trials[0].values == [_values(0, 4)["asr_text"], _values(0, 4)["util_text"]]
    assert study.trials[2].values == [_values(2, 4)["asr_text"], _values(2, 4)["util_text"]]
    if algorithm == "nsga2":  # the finished earlier trials are NSGA-II's generation 0, read by the sampler itself
        assert [t.number for t in search._sampler.get_population(study, 0)] == [0, 2]
    config = search.suggest("new-0")  # the first new trial is the study's 4th
    assert len(study.trials) == 4 and 0.0 <= config["lambda_esp"] <= 4.0


def test_grid_does_not_run_again_what_finished_earlier(tmp_path):
    from sweeps.search import build_search
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = _earlier_folder(tmp_path)
    spec = load_spec(_new_spec(tmp_path))
    prior = load_prior(str(earlier), spec)
    plan = build_search(spec, prior=prior.trials)
    # 3 x 2 grid points; (0, 0) and (2, 0) finished earlier; (2, 0.1) was stopped early: it runs again
    assert plan.num_samples == 4 and plan.reused == (prior.trials[0], prior.trials[2])
    twice = load_spec(_new_spec(tmp_path, name="twice.yaml",
                                search={"algorithm": "grid", "num_samples": 2, "max_concurrent": 1}))
    plan = build_search(twice, prior=load_prior(str(earlier), twice).trials)
    assert plan.num_samples == 2 * 6 - 2


def test_scheduler_ranks_a_new_trial_against_the_earlier_rung_values(tmp_path):
    from sweeps.pareto_scheduler import ParetoSuccessiveHalving
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = _earlier_folder(tmp_path)
    prior = load_prior(str(earlier), load_spec(_new_spec(tmp_path)))
    sched = ParetoSuccessiveHalving(metrics=["asr_text", "util_text"], modes=["min", "max"], rungs=[2], eta=2,
                                    prior=prior.trials)
    # (asr_text, -util_text) at step 2 of the three usable earlier trials, never decided themselves
    assert sched.recorded == {2: {f"prior:{i}": [_values(j, 2)["asr_text"], -_values(j, 2)["util_text"]]
                                  for i, j in enumerate((0, 1, 2))}}
    # Alone it would go on; behind all three earlier trials (3 of 4 strictly ahead >= ceil(4 / 2)) it stops.
    assert sched.decide("t", {"step": 2, "asr_text": 0.9, "util_text": 0.1}) == "STOP"
    assert ParetoSuccessiveHalving(metrics=["asr_text", "util_text"], modes=["min", "max"], rungs=[2],
                                   eta=2).decide("t", {"step": 2, "asr_text": 0.9, "util_text": 0.1}) == "CONTINUE"


def test_ehvi_search_takes_the_earlier_trials(tmp_path):
    """The ehvi search with probes (sweeps/mf_search.py's scheduler) reads PriorTrial's params, metrics
    and rungs: its model holds the finished earlier trials' finals and every earlier trial's first-rung values."""
    from sweeps.pareto_scheduler import build_scheduler
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = _earlier_folder(tmp_path)
    spec = load_spec(_new_spec(tmp_path, search={"algorithm": "ehvi", "probe": True, "max_concurrent": 1}))
    prior = load_prior(str(earlier), spec)
    model = build_scheduler(spec, None, prior=prior.trials).model
    assert model.has_prior
    assert {k: v.tolist() for k, v in model.final.items()} == {
        f"prior:{i}": [_values(j, 4)["asr_text"], -_values(j, 4)["util_text"]] for i, j in ((0, 0), (2, 2))}
    assert sorted(model.rung) == ["prior:0", "prior:1", "prior:2"]


def test_validate_reads_the_earlier_sweep_too(tmp_path, capsys):
    from sweeps.cli import main

    earlier = _earlier_folder(tmp_path)
    spec = _new_spec(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["sweep", "validate", str(spec), "--set", f"search.warm_start={earlier}"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert f"warm start from {earlier} ({EARLIER_ID}): 3 earlier trial(s)" in out
    assert "grid: 2 configuration run(s) finished in the earlier sweep are reused, 4 to run" in out
    refused = _new_spec(tmp_path, name="other.yaml", objectives=GRADED)
    capsys.readouterr()
    line = refuse(capsys, ["sweep", "validate", refused, "--set", f"search.warm_start={earlier}"], watch=[tmp_path])
    assert "ranked objectives" in line, line


#: Training settings the earlier trials and this spec hold differently, though no column says so at
#: first sight: this spec's None, a column older code did not write (read as today's default), a nested
#: setting only the earlier trials set. (earlier changes, this spec's changes, the drop reason)
HIDDEN = {
    "this spec's None": ({}, {"train": {"max_steps": None}},
                         "max_steps=4.0 where this spec trains with None"),
    "unwritten column, absent": ({"unwritten": {"lambda_adv": "absent"}}, {"train": {"lambda_adv": 0.5}},
                                 "lambda_adv=0.0 where this spec trains with 0.5"),
    "unwritten column, null": ({"unwritten": {"lambda_adv": "null"}}, {"train": {"lambda_adv": 0.5}},
                               "lambda_adv=0.0 where this spec trains with 0.5"),
    "nested setting": ({"train": {"lambda_adv": 0.5, "adv_attack": {"steps": 3}}}, {"train": {"lambda_adv": 0.5}},
                       "adv_attack.steps=3.0 where this spec leaves it unset"),
}


@pytest.mark.parametrize("case", sorted(HIDDEN))
def test_a_setting_the_earlier_trials_trained_with_differently_drops_them(tmp_path, case):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier_changes, new_changes, reason = HIDDEN[case]
    trials = EARLIER[:3]  # the three that the loader test keeps
    earlier = _earlier_folder(tmp_path, trials, **earlier_changes)
    with pytest.raises(ConfigError) as refused:
        load_prior(str(earlier), load_spec(_new_spec(tmp_path, **new_changes)))
    assert f"{reason} (3)" in str(refused.value), refused.value
    # The same earlier folder against a spec that trains as the earlier trials did keeps all three.
    same = {"train": earlier_changes["train"]} if "train" in earlier_changes else {}
    prior = load_prior(str(earlier), load_spec(_new_spec(tmp_path, name="same.yaml", **same)))
    assert [t.params for t in prior.trials] == [{k: v for k, v in p.items() if k != "lr"} for p, _, _ in trials]
    assert prior.dropped == {}


def test_another_training_seed_informs_a_model_based_search_but_is_no_run_a_grid_can_reuse(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = _earlier_folder(tmp_path, EARLIER[:3])  # trained with the tiny spec's seed, 0
    tpe = load_spec(_new_spec(tmp_path, name="tpe.yaml", train={"seed": 1},
                              search={"algorithm": "tpe", "num_samples": 4, "seed": 3}))
    assert tpe.search.algorithm == "tpe" and [t.params["lambda_esp"] for t in load_prior(str(earlier), tpe).trials] \
        == [0.0, 2.0, 2.0]
    with pytest.raises(ConfigError, match=r"seed=0(\.0)? where this spec trains with 1 \(3\)"):
        load_prior(str(earlier), load_spec(_new_spec(tmp_path, name="grid.yaml", train={"seed": 1})))


def test_objectives_of_the_robust_stage_need_the_same_robust_settings(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    robust = [{"metric": "robust_concept_auc", "mode": "min"}, {"metric": "util_text", "mode": "max"}]
    earlier = _earlier_folder(tmp_path, objectives=robust, fidelity={"text_every": 2, "robust": {"steps": 3}})
    other = load_spec(_new_spec(tmp_path, objectives=robust, fidelity={"text_every": 2, "robust": {"steps": 4}}))
    with pytest.raises(ConfigError) as refused:
        load_prior(str(earlier), other)
    assert "measured its robust objectives with fidelity.robust={'steps': 3}, this spec with " \
           "fidelity.robust={'steps': 4}" in str(refused.value), refused.value
    # the same settings written another way (the default lr spelled out) are the same settings
    same = load_spec(_new_spec(tmp_path, name="same.yaml", objectives=robust,
                               fidelity={"text_every": 2, "robust": {"steps": 3, "lr": 1e-3}}))
    assert load_prior(str(earlier), same).sweep_id == EARLIER_ID


def test_objectives_of_the_attack_stage_need_the_same_attack_settings_wherever_it_runs(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    attack = [{"metric": "attack_depth", "mode": "max"}, {"metric": "util_text", "mode": "max"}]
    earlier = _earlier_folder(tmp_path, objectives=attack, fidelity={"text_every": 2, "attack": {"steps": 3}})
    other = load_spec(_new_spec(tmp_path, objectives=attack, fidelity={"text_every": 2, "attack": {"steps": 4}}))
    with pytest.raises(ConfigError, match=r"measured its attack objectives with fidelity.attack=\{'steps': 3\}, "
                                          r"this spec with fidelity.attack=\{'steps': 4\}"):
        load_prior(str(earlier), other)
    # the same attack run at other evaluations (``at``) measures the same thing
    same = load_spec(_new_spec(tmp_path, name="same.yaml", objectives=attack,
                               fidelity={"text_every": 2, "rungs": [2], "attack": {"steps": 3, "at": [2]}}))
    assert load_prior(str(earlier), same).sweep_id == EARLIER_ID


def _other_encoder(root: Path) -> dict:
    from tests.tiny_models import make_tiny_clip_encoder

    return {"train": {"encoder": str(make_tiny_clip_encoder(root / "enc2", seed=1))}}


MISMATCHES = {
    "encoder": (_other_encoder, "trained with encoder="),
    "prompt data": (lambda root: {"train": {"max_pairs": 16}},
                    "trained with max_pairs=None, this spec with max_pairs=16"),
    "text evaluation": (lambda root: {"train": {"text_eval": {"attack_samples": 8}}}, "trained with text_eval="),
    "objectives": (lambda root: {"objectives": GRADED},
                   "ranked objectives [asr_text (min), util_text (max)], this spec ranks [concept_auc (min), "
                   "util_sib (max)]"),
    "random search": (lambda root: {"search": {"algorithm": "random", "num_samples": 2}},
                      "search.warm_start with search.algorithm='random'"),
    "nothing fits": (lambda root: {"space": {"lambda_esp": {"grid": [5.0]}}}, "no trial of"),
    "all finished": (lambda root: {"space": {"lambda_esp": {"grid": [0.0]}, "lambda_lsa": {"grid": [0.0]}}},
                     "every configuration of this grid finished 1 time(s) in the earlier sweep"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_a_warm_start_from_another_experiment_is_refused_in_one_line_before_anything_is_written(
        tmp_path, capsys, case):
    earlier = _earlier_folder(tmp_path)
    change, expected = MISMATCHES[case]
    spec = _new_spec(tmp_path, **change(tmp_path))
    capsys.readouterr()  # what making the tiny models printed
    line = refuse(capsys, ["sweep", "run", spec, "--warm-start", earlier], watch=[tmp_path])
    assert expected in line, line
    assert not (tmp_path / "new").exists()


def test_warm_start_from_a_folder_that_holds_no_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    spec = _new_spec(tmp_path)
    capsys.readouterr()
    line = refuse(capsys, ["sweep", "run", spec, "--warm-start", tmp_path / "empty"], watch=[tmp_path])
    assert line.startswith("error: ") and "search.warm_start" in line and "holds no sweep" in line, line
    line = refuse(capsys, ["sweep", "run", spec, "--warm-start", tmp_path / "missing"], watch=[tmp_path])
    assert "is not a folder" in line, line


@pytest.mark.parametrize("where", ["a file", "its own storage", "an unknown URI scheme", "a damaged store"])
def test_validate_refuses_a_warm_start_that_is_no_earlier_sweep_in_one_line(tmp_path, capsys, where):
    earlier = _earlier_folder(tmp_path)
    spec = _new_spec(tmp_path)
    argv, expected = {
        "a file": ([spec, "--warm-start", spec], "is not a folder"),
        "its own storage": ([spec, "--storage", earlier, "--warm-start", f"{earlier}/."], "this sweep's own storage"),
        "an unknown URI scheme": ([spec, "--warm-start", "nosuch://bucket/x"], "cannot be read (ArrowInvalid: "),
        "a damaged store": ([spec, "--warm-start", earlier], "cannot be read as a sweep folder: 1 bad file(s)"),
    }[where]
    if where == "a damaged store":
        next((earlier / "results").rglob("*.parquet")).write_bytes(b"not parquet")
    capsys.readouterr()
    line = refuse(capsys, ["sweep", "validate", *argv], watch=[tmp_path])
    assert line.startswith("error: search.warm_start: ") and expected in line, line


# -- end to end: a real earlier sweep, then warm-started ones --------------------------------------------
@pytest.fixture(scope="module")
def earlier_sweep(tmp_path_factory):
    """A finished real tiny sweep: lambda_esp in {0, 2} at lambda_lsa 0, graded objectives, no pruning."""
    import sweeps

    root = tmp_path_factory.mktemp("earlier")
    spec = tiny_spec(root, storage=str(root / "sweep"), objectives=GRADED,
                     space={"lambda_esp": {"grid": [0.0, 2.0]}, "lambda_lsa": {"grid": [0.0]}},
                     search={"algorithm": "grid", "max_concurrent": 1})
    outcome = sweeps.run(str(spec), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 2
    return root


def _store_rows(storage: Path) -> list[dict]:
    from analysis.store import ResultStore

    return ResultStore(storage / "results").read().to_pylist()


@pytest.mark.slow
def test_grid_warm_start_end_to_end_runs_only_the_new_configuration(earlier_sweep, capsys):
    from sweeps.cli import main

    root = earlier_sweep
    spec = tiny_spec(root, storage=str(root / "grid"), objectives=GRADED,
                     space={"lambda_esp": {"grid": [0.0, 2.0, 4.0]}, "lambda_lsa": {"grid": [0.0]}},
                     search={"algorithm": "grid", "max_concurrent": 1})
    with pytest.raises(SystemExit) as done:
        main(["sweep", "run", str(spec), "--warm-start", str(root / "sweep")])
    assert done.value.code == 0, capsys.readouterr().err
    earlier = _store_rows(root / "sweep")
    rows = _store_rows(root / "grid")
    meta = json.loads((root / "grid" / "sweep.json").read_text())
    assert meta["warm_start"] == {"from": str(root / "sweep"), "sweep_id": earlier[0]["sweep_id"], "trials": 2,
                                  "reused": 2}
    new = [r for r in rows if r["sweep_id"] == meta["sweep_id"]]
    assert sorted((r["lambda_esp"], r["step"]) for r in new) == [(4.0, 2), (4.0, 4)]  # only the new point ran
    copied = sorted((r for r in rows if r["sweep_id"] != meta["sweep_id"]), key=lambda r: (r["trial_id"], r["step"]))
    assert copied == sorted(earlier, key=lambda r: (r["trial_id"], r["step"]))  # the reused runs, as stored


@pytest.mark.slow
def test_tpe_warm_start_end_to_end_tells_the_study_the_earlier_results(earlier_sweep):
    import sweeps
    from sweeps.search import _optuna_search_class

    root = earlier_sweep
    spec = tiny_spec(root, storage=str(root / "tpe"), objectives=GRADED,
                     space={"lambda_esp": {"uniform": [0.0, 4.0]}, "lambda_lsa": {"uniform": [0.0, 0.5]}},
                     search={"algorithm": "tpe", "num_samples": 2, "max_concurrent": 1, "seed": 3,
                             "warm_start": str(root / "sweep")})
    outcome = sweeps.run(str(spec), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 2
    # The study as Tune saved it with the experiment (the searcher's own restore).
    (state,) = (root / "tpe" / "ray" / "tune").glob("searcher-state-*.pkl")
    search = _optuna_search_class()(metric=["concept_auc", "util_sib"], mode=["min", "max"])
    search.restore(str(state))
    trials = search._ot_study.trials
    finals = sorted(((r["lambda_esp"], r["lambda_lsa"]), [r["concept_auc"], r["util_sib"]])
                    for r in _store_rows(root / "sweep") if r["status"] == "finished")
    assert sorted(((t.params["lambda_esp"], t.params["lambda_lsa"]), t.values) for t in trials[:2]) == finals
    new = {(r["lambda_esp"], r["lambda_lsa"]) for r in _store_rows(root / "tpe")}
    assert len(trials) == 4 and {(t.params["lambda_esp"], t.params["lambda_lsa"]) for t in trials[2:]} == new
    assert all(math.isfinite(v) for t in trials for v in t.values)
