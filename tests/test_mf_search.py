"""sweeps/mf_search.py (search.algorithm: ehvi): the hypervolume gain, the choice by expected gain, the
space-filling start, a warm start's prior, the spec checks, and a real Ray Tune run in which every
trial pauses at the probe rung, resumes from its checkpoint and finishes in the order of its gain."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.dominance import hypervolume
from sage_core.defs.errors import ConfigError
from sweeps.mf_search import MIN_FIT, MultiFidelityPareto, ParetoGainModel, hv_gains
from sweeps.spec import load_spec


@pytest.mark.parametrize("k", [2, 3])
def test_hv_gains_is_the_hypervolume_a_point_adds(k: int):
    rng = np.random.default_rng(k)
    for _ in range(50):
        front = rng.uniform(0, 1, (int(rng.integers(0, 6)), k))
        points = rng.uniform(-0.2, 1.2, (4, 3, k))
        ref = [1.0] * k
        base = hypervolume(front, ref) if len(front) else 0.0
        expected = [[hypervolume(np.vstack([front, p[None]]), ref) - base for p in row] for row in points]
        np.testing.assert_allclose(hv_gains(front, points, ref), expected, rtol=0, atol=1e-12)


def _model(**kw) -> ParetoGainModel:
    return ParetoGainModel(metrics=["concept_auc", "util_sib"], modes=["min", "max"], **kw)


def test_choice_is_the_largest_gain_and_a_duplicate_of_a_believed_trial_adds_nothing():
    model = _model()
    rung = {"a": (0.9, 0.9), "b": (0.9, 0.9), "c": (0.5, 0.6), "d": (0.95, 0.5)}  # d is dominated by a
    for tid, (auc, util) in rung.items():
        model.add(tid, {"x": len(tid)})
        model.observe_rung(tid, {"concept_auc": auc, "util_sib": util})
    # No finished trial: the rung values stand for the finals; each point alone against the reference
    # (nadir + 10% of the range), computed with the library's hypervolume:
    pts = {t: np.array([auc, -util]) for t, (auc, util) in rung.items()}
    stack = np.asarray(list(pts.values()))
    ref = list(stack.max(0) + 0.1 * (stack.max(0) - stack.min(0)))
    alone = {t: hypervolume(p[None], ref) for t, p in pts.items()}
    first = model.choose(list(rung))
    assert first == max(alone, key=lambda t: (alone[t], -list(rung).index(t)))
    gains = dict(zip(rung, model.expected_gains(list(rung), believed=["a"]), strict=True))
    assert gains["b"] == 0.0 and gains["d"] == 0.0  # equal to, or dominated by, what a will give
    # nothing left that adds anything: with min_gain 0 it still runs (the first), with min_gain > 0 it stops
    assert model.choose(["b", "d"], believed=["a"]) == "b"
    model.min_gain = 0.01
    assert model.choose(["b", "d"], believed=["a"]) is None
    assert gains["c"] == pytest.approx(hypervolume(np.vstack([pts["a"], pts["c"]]), ref) - alone["a"], abs=1e-12)


def test_proposals_are_the_grid_in_a_seeded_random_order():
    from ray import tune

    from sweeps.ehvi_search import proposals

    space = {"a": tune.grid_search([1, 2, 3]), "b": tune.grid_search(["x", "y"])}
    grid = [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]
    first = proposals(space, num_samples=2, seed=0)
    key = lambda c: (c["a"], c["b"])  # noqa: E731
    assert sorted(first, key=key) == sorted(grid * 2, key=key)  # every point num_samples times
    assert proposals(space, num_samples=2, seed=0) == first  # seeded
    assert first != grid * 2 and proposals(space, num_samples=2, seed=1) != first  # and shuffled


@dataclasses.dataclass(frozen=True)
class _Prior:
    params: dict
    metrics: dict
    rungs: dict


def test_a_prior_leads_the_first_choice_and_unfinished_prior_trials_are_not_finals():
    prior = [_Prior({"x": float(x)}, {"concept_auc": 0.9 - 0.1 * x, "util_sib": 0.9 - 0.1 * x}, {6: {}})
             for x in range(5)]  # x = 0 .. 4 on a line: every point trades safety for utility (a front)
    prior.append(_Prior({"x": 2.5}, {}, {6: {"concept_auc": 0.5, "util_sib": 0.5}}))  # stopped early
    model = _model(prior=prior)
    assert len(model.final) == 5 and model.has_prior
    for x in range(5):
        model.add(f"t{x}", {"x": float(x)})
    mean, _ = model.predict([f"t{x}" for x in range(5)])
    want = np.array([[0.9 - 0.1 * x, -(0.9 - 0.1 * x)] for x in range(5)])
    # A GP with a fitted noise term smooths, but a straight line is inside its span: within .02.
    np.testing.assert_allclose(mean, want, atol=0.02)
    first = model.choose([f"t{x}" for x in range(5)])
    ref = np.asarray(list(model.final.values()))
    ref = ref.max(0) + 0.1 * (ref.max(0) - ref.min(0))
    alone = [hypervolume(want[x][None], list(ref)) for x in range(5)]  # the middle of a line front adds most
    assert first == f"t{int(np.argmax(alone))}"


def _probe_trainable(config):
    """Two evaluations (steps 2 and 4) with a checkpoint at each; a resumed trial continues from it."""
    import tempfile

    from ray import tune

    x = config["x"]
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.loads((Path(d) / "step.json").read_text())["step"]
    for step in (2, 4):
        if step <= start:
            continue
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "step.json").write_text(json.dumps({"step": step}))
            tune.report({"step": step, "total_steps": 4, "concept_auc": 0.5 + 0.1 * x, "util_sib": 0.4 + 0.1 * x,
                         "resumed_from": start}, checkpoint=tune.Checkpoint.from_directory(d))


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_real_tune_run_pauses_every_probe_then_resumes_each_from_its_checkpoint(ray_local, tmp_path):
    from ray import tune

    xs = [0.0, 1.0, 2.0]  # x trades safety (auc up) for utility: all on the front
    from ray.tune.search import BasicVariantGenerator

    scheduler = MultiFidelityPareto(metrics=["concept_auc", "util_sib"], modes=["min", "max"], first_rung=2,
                                    dims=["x"], max_concurrent=2)
    tuner = tune.Tuner(_probe_trainable, param_space={"x": tune.grid_search(xs)},
                       tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=BasicVariantGenerator()),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="probe", verbose=0))
    results = tuner.fit()
    assert not results.errors
    df = results.get_dataframe()
    assert sorted(df["x"] if "x" in df else [r.config["x"] for r in results]) == xs
    for r in results:
        steps = [int(s) for s in r.metrics_dataframe["step"]]
        assert steps == [2, 4]  # step 2 reported once: the finish resumed from the probe's checkpoint
        assert int(r.metrics_dataframe["resumed_from"].iloc[-1]) == 2
    assert len(scheduler.model.rung) == len(xs) and len(scheduler.model.final) == len(xs)


def _grid_trainable(config):
    """Reports its own start time with a final result (step 4 of 4) of the spec's objectives."""
    import time

    from ray import tune

    x, start = config["lambda_esp"], time.time()
    tune.report({"step": 4, "total_steps": 4, "matched_auc": 0.5 + 0.1 * x, "util_sib": 0.4 + 0.1 * x,
                 "started": start})


@pytest.mark.slow
def test_real_tune_run_of_a_spec_runs_the_proposals_one_at_a_time(ray_local, tmp_path):
    from ray import tune

    from sweeps.pareto_scheduler import build_scheduler
    from sweeps.search import build_search

    spec = load_spec(_spec(tmp_path, {"algorithm": "ehvi", "max_concurrent": 1},
                           space={"lambda_esp": {"grid": [0.0, 1.0, 2.0, 3.0]}}))
    plan = build_search(spec)  # as sweeps/runner.py builds the Tuner
    scheduler = build_scheduler(spec, None)
    tuner = tune.Tuner(_grid_trainable, param_space=plan.param_space,
                       tune_config=tune.TuneConfig(search_alg=plan.search_alg, scheduler=scheduler,
                                                   num_samples=plan.num_samples,
                                                   max_concurrent_trials=spec.search.max_concurrent),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="ehvi", verbose=0))
    results = tuner.fit()
    assert not results.errors
    starts = sorted((r.metrics["started"], r.config["lambda_esp"]) for r in results)
    # one at a time: each started after the one before reported its end
    ends = sorted((r.metrics["timestamp"], r.config["lambda_esp"]) for r in results)
    assert [x for _, x in starts] == [x for _, x in ends]
    # the first three in the proposals' (seeded random) order, then the one left
    assert [x for _, x in starts] == [c["lambda_esp"] for c in plan.search_alg.candidates]
    assert sorted(x for _, x in starts) == [0.0, 1.0, 2.0, 3.0]


def _spec(tmp_path: Path, search: dict, **extra) -> Path:
    body = {"include": "quickstart", "name": "ehvi", "storage": str(tmp_path / "s"),
            "space": {"lambda_esp": {"grid": [0.0, 2.0]}}, "search": search,
            "scheduler": {"kind": "pareto_sh", "eta": 2}, "fidelity": {"text_every": 20, "rungs": [20, 40]}}
    body.update(extra)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_spec_checks_and_what_the_spec_builds(tmp_path):
    from sweeps.ehvi_search import EhviSearcher
    from sweeps.pareto_scheduler import ParetoSuccessiveHalving, build_scheduler
    from sweeps.search import build_search

    spec = load_spec(_spec(tmp_path, {"algorithm": "ehvi", "probe": True}))
    sched = build_scheduler(spec, None)
    # with a probe, the spec's scheduler (pareto_sh) is replaced: the search pauses and resumes trials
    assert spec.scheduler.kind == "pareto_sh" and isinstance(sched, MultiFidelityPareto)
    assert sched.first_rung == (spec.fidelity.rungs or [spec.fidelity.text_every])[0]
    assert sched.max_concurrent == spec.search.max_concurrent
    with pytest.raises(ConfigError, match=r"search.probe=true with search.algorithm='grid'"):
        load_spec(_spec(tmp_path, {"algorithm": "grid", "probe": True}))
    # without: a searcher over the grid's proposals, and the spec's own scheduler
    spec = load_spec(_spec(tmp_path, {"algorithm": "ehvi", "num_samples": 2}))
    plan = build_search(spec)
    assert isinstance(plan.search_alg, EhviSearcher) and plan.param_space == {}
    assert sorted(c["lambda_esp"] for c in plan.search_alg.candidates) == [0.0, 0.0, 2.0, 2.0]
    assert plan.num_samples == 4
    assert isinstance(build_scheduler(spec, None), ParetoSuccessiveHalving)


def test_searcher_hands_out_each_proposal_once_and_resumes_from_its_saved_state(tmp_path):
    from ray.tune.search import Searcher

    from sweeps.ehvi_search import EhviSearcher

    cands = [{"x": float(x)} for x in range(5)]

    def make() -> EhviSearcher:
        return EhviSearcher(candidates=cands, metrics=["concept_auc", "util_sib"], modes=["min", "max"], seed=0)

    searcher = make()
    first = [searcher.suggest(f"t{i}")["x"] for i in range(3)]
    assert first == [0.0, 1.0, 2.0]  # in the proposals' order until three have finished
    for i, x in enumerate(first):
        searcher.on_trial_complete(f"t{i}", {"step": 4, "total_steps": 4, "concept_auc": 0.5 + 0.1 * x,
                                             "util_sib": 0.4 + 0.1 * x})
    searcher.save(str(tmp_path / "s.json"))
    again = make()
    again.restore(str(tmp_path / "s.json"))
    rest = [again.suggest(f"t{i}")["x"] for i in range(3, 5)]
    assert sorted(first + rest) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert again.suggest("t5") == Searcher.FINISHED
    again.on_trial_complete("t3", {"step": 4, "total_steps": 4, "concept_auc": float("nan"), "util_sib": 0.5})
    again.on_trial_complete("t4", {"step": 2, "total_steps": 4, "concept_auc": 0.1, "util_sib": 0.9})  # stopped
    assert len(again.model.final) == 3  # neither a non-finite nor an unfinished result is a final
    assert MIN_FIT == 3  # the start above follows the order for exactly three picks


def test_pareto_search_ships_the_ehvi_search(tmp_path):
    spec = load_spec("pareto-search", storage=str(tmp_path / "s"), overrides={"encoder": "sd14-init"})
    assert spec.search.algorithm == "ehvi" and not spec.search.probe


def test_a_warm_start_reaches_the_searcher_and_leads_its_first_pick(tmp_path):
    from sweeps.search import build_search
    from sweeps.warm_start import PriorTrial

    spec = load_spec(_spec(tmp_path, {"algorithm": "ehvi"}, space={"lambda_esp": {"grid": [0.0, 1.0, 2.0, 3.0]}}))
    # the earlier sweep: lambda_esp = 2 dominates every other configuration by far
    values = {0.0: (0.9, 0.5), 1.0: (0.85, 0.55), 2.0: (0.3, 0.95), 3.0: (0.8, 0.6)}
    prior = [PriorTrial(params={"lambda_esp": x}, metrics={"matched_auc": a, "util_sib": u}, rungs={})
             for x, (a, u) in values.items()]
    searcher = build_search(spec, prior=prior).search_alg
    assert searcher.model.has_prior
    assert searcher.suggest("t0") == {"lambda_esp": 2.0}
    cold = build_search(spec).search_alg  # without the prior: the first proposal
    assert cold.suggest("t0") == cold.candidates[0]
