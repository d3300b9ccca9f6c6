"""Warm starts (``sage sweep run SPEC --warm-start DIR``): an earlier sweep's stored results seed the
search. The loader, the searches and the scheduler take earlier sweep folders (``tests.warm_start_folders``);
the end-to-end tests run real tiny sweeps (real Ray, DeepSpeed on CPU, Optuna, Parquet) one after the
other. Which earlier trials may be taken, and the refusals: ``test_warm_start_checks.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_sweep_run import tiny_spec
from tests.warm_start_folders import EARLIER, EARLIER_ID, GRADED, earlier_folder, earlier_values, new_spec


def test_loader_reads_params_finals_and_rungs_and_counts_what_it_drops(tmp_path):
    from sweeps.spec import load_spec
    from sweeps.warm_start import PriorTrial, load_prior

    earlier = earlier_folder(tmp_path)
    prior = load_prior(str(earlier), load_spec(new_spec(tmp_path)))
    assert prior.sweep_id == EARLIER_ID
    assert prior.trials == (  # a grid takes only runs with this spec's every setting: each is the same run
        PriorTrial(params={"lambda_esp": 0.0, "lambda_lsa": 0.0}, metrics=earlier_values(0, 4),
                   rungs={2: earlier_values(0, 2), 4: earlier_values(0, 4)}, same_run=True),
        PriorTrial(params={"lambda_esp": 2.0, "lambda_lsa": 0.1}, metrics={}, rungs={2: earlier_values(1, 2)},
                   same_run=True),
        PriorTrial(params={"lambda_esp": 2.0, "lambda_lsa": 0.0}, metrics=earlier_values(2, 4),
                   rungs={2: earlier_values(2, 2), 4: earlier_values(2, 4)}, same_run=True),
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

    earlier = earlier_folder(tmp_path)
    base = base_train_config(load_spec(tmp_path / "earlier.yaml"))
    first = resolve_trial("f0", {"lambda_esp": 4.0, "lambda_lsa": 0.0, "lr": 1e-3}, base=base, variants={})
    elsewhere = resolve_trial("f1", {"lambda_esp": 4.0, "lambda_lsa": 0.1, "lr": 1e-3}, base=base, variants={})
    copied = [result_row(sweep_id="tiny-first-0", trial=t, result={"step": 4, **earlier_values(9, 4)},
                         status="finished", code_version="test") for t in (first, elsewhere)]
    copied[1]["encoder"] = "/elsewhere/encoder"  # trained in another context: never used
    ResultStore(earlier / "results").write(copied)

    spec = load_spec(new_spec(tmp_path))
    prior = load_prior(str(earlier), spec)
    assert len(prior.trials) == 4 and prior.trials[3] == PriorTrial(
        params={"lambda_esp": 4.0, "lambda_lsa": 0.0}, metrics=earlier_values(9, 4), rungs={4: earlier_values(9, 4)},
        same_run=True)
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

    earlier = earlier_folder(tmp_path)
    spec = load_spec(new_spec(tmp_path, space={"lambda_esp": {"uniform": [0.0, 4.0]},
                                                "lambda_lsa": {"choice": [0.0, 0.1]}},
                               search={"algorithm": algorithm, "num_samples": 4, "max_concurrent": 1}))
    prior = load_prior(str(earlier), spec)
    search = build_search(spec, prior=prior.trials).search_alg
    study = search._ot_study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert [t.params for t in study.trials] == [{k: v for k, v in p.items() if k != "lr"} for p, _, _ in EARLIER[:3]]
    assert study.trials[0].values == [earlier_values(0, 4)["asr_text"], earlier_values(0, 4)["util_text"]]
    assert study.trials[2].values == [earlier_values(2, 4)["asr_text"], earlier_values(2, 4)["util_text"]]
    if algorithm == "nsga2":  # the finished earlier trials are NSGA-II's generation 0, read by the sampler itself
        assert [t.number for t in search._sampler.get_population(study, 0)] == [0, 2]
    config = search.suggest("new-0")  # the first new trial is the study's 4th
    assert len(study.trials) == 4 and 0.0 <= config["lambda_esp"] <= 4.0


def test_grid_does_not_run_again_what_finished_earlier(tmp_path):
    from sweeps.search import build_search
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = earlier_folder(tmp_path)
    spec = load_spec(new_spec(tmp_path))
    prior = load_prior(str(earlier), spec)
    plan = build_search(spec, prior=prior.trials)
    # 3 x 2 grid points; (0, 0) and (2, 0) finished earlier; (2, 0.1) was stopped early: it runs again
    assert plan.num_samples == 4 and plan.reused == (prior.trials[0], prior.trials[2])
    twice = load_spec(new_spec(tmp_path, name="twice.yaml",
                                search={"algorithm": "grid", "num_samples": 2, "max_concurrent": 1}))
    plan = build_search(twice, prior=load_prior(str(earlier), twice).trials)
    assert plan.num_samples == 2 * 6 - 2


def test_ehvi_does_not_run_again_what_finished_earlier_with_the_same_seed(tmp_path):
    import itertools

    from sage_core.defs.errors import ConfigError
    from sweeps.search import build_search
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = earlier_folder(tmp_path)
    grid = [{"lambda_esp": e, "lambda_lsa": s} for e, s in itertools.product((0.0, 2.0, 4.0), (0.0, 0.1))]
    ehvi = {"algorithm": "ehvi", "max_concurrent": 1, "seed": 3}
    # Same training seed: (0, 0) and (2, 0) finished earlier and would repeat; (2, 0.1) was stopped early.
    spec = load_spec(new_spec(tmp_path, search=ehvi))
    prior = load_prior(str(earlier), spec)
    plan = build_search(spec, prior=prior.trials)
    assert plan.reused == (prior.trials[0], prior.trials[2]) and plan.num_samples == 4
    searcher = plan.search_alg
    assert sorted(map(str, searcher.candidates)) == sorted(str(g) for g in grid if (g["lambda_esp"], g["lambda_lsa"])
                                                        not in {(0.0, 0.0), (2.0, 0.0)})
    # the reused runs stand in this sweep's own front (minimised: asr_text, -util_text); no prior final is left
    assert {k: v.tolist() for k, v in searcher.model.final.items()} == {
        "r0": [earlier_values(0, 4)["asr_text"], -earlier_values(0, 4)["util_text"]],
        "r1": [earlier_values(2, 4)["asr_text"], -earlier_values(2, 4)["util_text"]]}
    assert plan.notes == ["ehvi: 2 run(s) the earlier sweep finished with the same settings and training seed "
                          "are reused, 4 to run"]
    # A driver that resumes gets the same searcher back from its saved state (JSON, never a pickle).
    state = tmp_path / "searcher.json"
    searcher.suggest("t0")
    searcher.save(str(state))
    again = build_search(spec, prior=prior.trials).search_alg
    again.restore(str(state))
    assert again.left == searcher.left and again.running == {"t0": searcher.running["t0"]}
    assert {k: v.tolist() for k, v in again.model.final.items()} == {
        k: v.tolist() for k, v in searcher.model.final.items()}
    # Another training seed: the earlier runs are evidence, not repeats; every proposal runs.
    other = load_spec(new_spec(tmp_path, name="seed1.yaml", search=ehvi, train={"seed": 1}))
    prior = load_prior(str(earlier), other)
    assert [t.same_run for t in prior.trials] == [False] * 3
    plan = build_search(other, prior=prior.trials)
    assert plan.reused == () and plan.num_samples == 6 and plan.notes == []
    assert sorted(plan.search_alg.model.final) == ["prior:0", "prior:2"]
    # Every proposal finished earlier with the same seed: nothing is left to run, refused.
    done = [({**g, "lr": 1e-3}, (2, 4), "finished") for g in grid]
    full = earlier_folder(tmp_path / "full", trials=done)
    spec = load_spec(new_spec(tmp_path / "full", search=ehvi))
    with pytest.raises(ConfigError, match="every proposal of this search finished in the earlier sweep"):
        build_search(spec, prior=load_prior(str(full), spec).trials)


def test_scheduler_ranks_a_new_trial_against_the_earlier_rung_values(tmp_path):
    from sweeps.pareto_scheduler import ParetoSuccessiveHalving
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = earlier_folder(tmp_path)
    prior = load_prior(str(earlier), load_spec(new_spec(tmp_path)))
    sched = ParetoSuccessiveHalving(metrics=["asr_text", "util_text"], modes=["min", "max"], rungs=[2], eta=2,
                                    prior=prior.trials)
    # (asr_text, -util_text) at step 2 of the three usable earlier trials, never decided themselves
    assert sched.recorded == {2: {f"prior:{i}": [earlier_values(j, 2)["asr_text"], -earlier_values(j, 2)["util_text"]]
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

    earlier = earlier_folder(tmp_path)
    spec = load_spec(new_spec(tmp_path, search={"algorithm": "ehvi", "probe": True, "max_concurrent": 1}))
    prior = load_prior(str(earlier), spec)
    model = build_scheduler(spec, None, prior=prior.trials).model
    assert model.has_prior
    assert {k: v.tolist() for k, v in model.final.items()} == {
        f"prior:{i}": [earlier_values(j, 4)["asr_text"], -earlier_values(j, 4)["util_text"]]
        for i, j in ((0, 0), (2, 2))}
    assert sorted(model.rung) == ["prior:0", "prior:1", "prior:2"]


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
def test_ehvi_warm_start_end_to_end_does_not_repeat_the_earlier_runs(earlier_sweep):
    import sweeps

    root = earlier_sweep
    spec = tiny_spec(root, storage=str(root / "ehvi"), objectives=GRADED,
                     space={"lambda_esp": {"grid": [0.0, 2.0, 4.0]}, "lambda_lsa": {"grid": [0.0]}},
                     search={"algorithm": "ehvi", "max_concurrent": 1, "seed": 3, "warm_start": str(root / "sweep")})
    outcome = sweeps.run(str(spec), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 1
    earlier = _store_rows(root / "sweep")
    meta = json.loads((root / "ehvi" / "sweep.json").read_text())
    assert meta["warm_start"]["reused"] == 2
    rows = _store_rows(root / "ehvi")
    new = [r for r in rows if r["sweep_id"] == meta["sweep_id"]]
    assert sorted((r["lambda_esp"], r["step"]) for r in new) == [(4.0, 2), (4.0, 4)]  # only the new point ran
    copied = sorted((r for r in rows if r["sweep_id"] != meta["sweep_id"]), key=lambda r: (r["trial_id"], r["step"]))
    assert copied == sorted(earlier, key=lambda r: (r["trial_id"], r["step"]))  # the earlier runs, as stored


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
