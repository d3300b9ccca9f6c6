"""``tpe`` / ``nsga2`` never hand out a run already made (``sweeps.search.ParetoOptunaSearch``): a
proposal equal to one of this sweep's trials, or to an earlier sweep's very run (warm start), is
told FAILED to the real Optuna study and the sampler is asked again; on a finite space the search
ends once every configuration has run. Checked against the space enumerated here, independently."""

from __future__ import annotations

import itertools

import pytest

from tests.test_sweep_run import ray_local  # noqa: F401 - a fixture
from tests.warm_start_folders import earlier_folder, earlier_values, new_spec

GRID = {"lambda_esp": [0.0, 2.0, 4.0], "lambda_lsa": [0.0, 0.1]}
ALL = {(e, s) for e, s in itertools.product(*GRID.values())}


def _discrete(values: dict, points=None):
    from sweeps.search import DiscreteSpace

    return DiscreteSpace(values, points if points is not None else _points(values), seed=0)


def _points(values: dict) -> list[dict]:
    return [dict(zip(values, c, strict=True)) for c in itertools.product(*values.values())]


def _searcher(algorithm: str, *, seed: int, num_samples: int = 6, taken=(), points="grid"):
    import optuna

    from sweeps.search import _optuna_search_class

    space = {k: optuna.distributions.CategoricalDistribution(v) for k, v in GRID.items()}
    grid = [dict(zip(GRID, c, strict=True)) for c in itertools.product(*GRID.values())]
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=2, constant_liar=True) if algorithm == "tpe"
               else optuna.samplers.NSGAIISampler(seed=seed, population_size=2))
    return _optuna_search_class()(space=space, metric=["asr", "util"], mode=["min", "max"], sampler=sampler,
                                  taken=taken, discrete=_discrete(GRID, grid) if points == "grid" else None)


def _values(point) -> dict[str, float]:
    e, s = point["lambda_esp"], point["lambda_lsa"]
    return {"asr": 0.5 - 0.1 * e + s, "util": 0.9 - 0.05 * e - s, "final": 1.0}


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_configuration_runs_once_then_the_search_ends(algorithm, seed):
    from ray.tune.search import Searcher

    search = _searcher(algorithm, seed=seed)
    running, seen = [], []
    for i in range(6):  # two workers: a trial finishes only after the next one started
        config = search.suggest(f"t{i}")
        seen.append((config["lambda_esp"], config["lambda_lsa"]))
        running.append((f"t{i}", config))
        if len(running) == 2:
            tid, done = running.pop(0)
            search.on_trial_complete(tid, _values(done))
    assert sorted(seen) == sorted(ALL)  # each of the 6 configurations exactly once
    assert search.suggest("t6") == Searcher.FINISHED
    studied = search._ot_study.trials
    assert sum(t.state.name == "FAIL" for t in studied) == len(studied) - 6  # the repeats, told FAILED
    assert sorted((t.params["lambda_esp"], t.params["lambda_lsa"]) for t in studied
                  if t.state.name != "FAIL") == sorted(ALL)


def test_a_failed_or_pruned_run_keeps_its_configuration():
    """Neither runs again as a new trial (a failed one reruns under its own id with --retry-failed)."""
    import optuna
    from ray.tune.search import Searcher

    from sweeps.search import _optuna_search_class

    space = {"lambda_esp": optuna.distributions.CategoricalDistribution([0.0, 2.0, 4.0])}
    search = _optuna_search_class()(space=space, metric=["asr", "util"], mode=["min", "max"],
                                    sampler=optuna.samplers.RandomSampler(seed=0),
                                    discrete=_discrete({"lambda_esp": [0.0, 2.0, 4.0]}))
    first, second = search.suggest("a"), search.suggest("b")
    search.on_trial_complete("a", None, error=True)  # crashed
    search.on_trial_complete("b", {"asr": 0.2, "util": 0.5, "final": 0.0})  # stopped at a rung
    third = search.suggest("c")
    assert sorted(c["lambda_esp"] for c in (first, second, third)) == [0.0, 2.0, 4.0]
    assert search.suggest("d") == Searcher.FINISHED


def _distance(a: dict, b: dict, values: dict) -> float:
    """Per dimension: the move along its sorted values, scaled to [0, 1] (the fallback's definition)."""
    return sum(abs(values[n].index(a[n]) - values[n].index(b[n])) / (len(values[n]) - 1) for n in values)


def test_the_fallback_takes_the_nearest_configuration_not_yet_run_to_what_tpe_proposed():
    """On a 5 x 5 x 5 space TPE soon proposes configurations already run; each time the sampler repeats
    itself REDRAWS times, the trial run is one nearest to its last proposal among those not yet run
    (brute force over the study's own record)."""
    import optuna

    from sweeps.search import REDRAWS, _optuna_search_class

    values = {n: [0, 1, 2, 3, 4] for n in "abc"}
    space = {n: optuna.distributions.CategoricalDistribution(v) for n, v in values.items()}
    points = [dict(zip(values, c, strict=True)) for c in itertools.product(*values.values())]
    search = _optuna_search_class()(space=space, metric=["f", "g"], mode=["min", "min"], discrete=_discrete(values),
                                    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5, constant_liar=True))
    for i in range(40):
        c = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {"f": sum((c[n] - 1) ** 2 for n in "abc"),
                                           "g": sum((c[n] - 3) ** 2 for n in "abc"), "final": 1.0})
    trials = search._ot_study.trials
    ran = [t for t in trials if t.state.name != "FAIL"]
    assert len(ran) == 40 and len({tuple(sorted(t.params.items())) for t in ran}) == 40
    fallbacks = 0
    for k, t in enumerate(trials):
        if t.state.name == "FAIL" or k < REDRAWS or any(u.state.name != "FAIL" for u in trials[k - REDRAWS:k]):
            continue
        fallbacks += 1
        proposal = trials[k - 1].params
        done = {tuple(sorted(u.params.items())) for u in trials[:k] if u.state.name != "FAIL"}
        best = min(_distance(p, proposal, values) for p in points if tuple(sorted(p.items())) not in done)
        assert _distance(t.params, proposal, values) == pytest.approx(best)
    assert fallbacks >= 5  # the case arises


def test_nearest_untaken_on_mixed_dimensions():
    from sweeps.resolved_trial import point_key

    space = _discrete({"lr": [1e-4, 1e-3, 1e-2], "kind": ["x", "y"]})
    taken = {point_key({"lr": 1e-3, "kind": "x"}), point_key({"lr": 1e-4, "kind": "x"})}
    # nearest to (1e-3, x): (1e-3, y) is 1 away (kind differs), (1e-2, x) 0.5 (one step of two)
    assert space.untaken(taken, {"lr": 1e-3, "kind": "x"}) == {"lr": 1e-2, "kind": "x"}
    assert space.untaken(taken | {point_key({"lr": 1e-2, "kind": "x"})},
                         {"lr": 1e-3, "kind": "x"}) == {"lr": 1e-3, "kind": "y"}
    assert space.untaken({point_key(p) for p in space.points}, {"lr": 1e-3, "kind": "x"}) is None
    # equal sums tie whatever float rounding does (0.1 + 0.2 > 0.3 in floats): the seeded order decides
    ties = _discrete({"a": list(range(11)), "b": list(range(11))})
    order = [{"a": 1, "b": 2}, {"a": 3, "b": 0}, {"a": 0, "b": 0}]  # 0.1 + 0.2 and 0.3 from (0, 0)
    ties.points, ties.keys = order, [point_key(p) for p in order]
    assert ties.untaken({point_key({"a": 0, "b": 0})}, {"a": 0, "b": 0}) == {"a": 1, "b": 2}
    ties.points, ties.keys = order[1::-1] + order[2:], [point_key(p) for p in order[1::-1] + order[2:]]
    assert ties.untaken({point_key({"a": 0, "b": 0})}, {"a": 0, "b": 0}) == {"a": 3, "b": 0}


def test_a_space_too_large_to_list_falls_back_on_seeded_draws_not_yet_run():
    """7^6 = 117,649 configurations (over FINITE_LIMIT): TPE repeats itself on categorical dimensions,
    and no configuration runs twice all the same."""
    import optuna

    from sweeps.search import _optuna_search_class
    from sweeps.space import FINITE_LIMIT, finite_points, parse_dimension

    values = {f"d{i}": list(range(7)) for i in range(6)}
    dims = {n: parse_dimension(n, {"choice": v}) for n, v in values.items()}
    assert finite_points(dims) is None and 7 ** 6 > FINITE_LIMIT
    space = {n: optuna.distributions.CategoricalDistribution(v) for n, v in values.items()}
    from sweeps.search import DiscreteSpace

    search = _optuna_search_class()(space=space, metric=["f", "g"], mode=["min", "min"],
                                    discrete=DiscreteSpace(values, None, seed=1),
                                    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5, constant_liar=True))
    seen = []
    for i in range(60):
        c = search.suggest(f"t{i}")
        seen.append(tuple(c[n] for n in values))
        search.on_trial_complete(f"t{i}", {"f": sum((c[n] - 1) ** 2 for n in values),
                                           "g": sum((c[n] - 2) ** 2 for n in values), "final": 1.0})
    assert len(set(seen)) == 60
    assert sum(t.state.name == "FAIL" for t in search._ot_study.trials) > 0  # the fallback was needed


def test_an_infinite_space_is_never_exhausted():
    import optuna

    from sweeps.search import _optuna_search_class

    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    search = _optuna_search_class()(space=space, metric=["asr", "util"], mode=["min", "max"],
                                    sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    xs = []
    for i in range(8):
        xs.append(search.suggest(f"t{i}")["x"])
        search.on_trial_complete(f"t{i}", {"asr": xs[-1], "util": 1 - xs[-1] ** 2, "final": 1.0})
    assert len(set(xs)) == 8 and all(0.0 <= x <= 1.0 for x in xs)


def test_saved_state_keeps_what_ran(tmp_path):
    search = _searcher("tpe", seed=4)
    ran = [search.suggest(f"t{i}") for i in range(3)]
    search.save(str(tmp_path / "state.pkl"))
    again = _searcher("tpe", seed=4, points=None)  # a resumed driver builds it bare, then restores
    again.restore(str(tmp_path / "state.pkl"))
    rest = [again.suggest(f"t{i}") for i in range(3, 6)]
    assert sorted((c["lambda_esp"], c["lambda_lsa"]) for c in ran + rest) == sorted(ALL)


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2"])
def test_warm_start_reuses_the_earlier_same_runs_and_proposes_only_the_others(tmp_path, algorithm):
    from sage_core.defs.errors import ConfigError
    from sweeps.search import build_search
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = earlier_folder(tmp_path)
    search = {"algorithm": algorithm, "num_samples": 6, "max_concurrent": 1, "seed": 5}
    spec = load_spec(new_spec(tmp_path, search=search))
    prior = load_prior(str(earlier), spec)
    plan = build_search(spec, prior=prior.trials)
    # same training seed: (0, 0) and (2, 0) finished earlier; (2, 0.1) was stopped there (it may run again)
    assert plan.reused == (prior.trials[0], prior.trials[2])
    assert plan.num_samples == 4
    assert plan.notes == [
        f"{algorithm}: 2 run(s) the earlier sweep finished with the same settings and training seed are reused, "
        "4 configuration(s) of the space left to run",
        f"{algorithm}: search.num_samples=6 but the space has 4 configuration(s) not yet run, and none runs "
        "twice: the search ends after 4"]
    proposed = []
    for i in range(4):
        config = plan.search_alg.suggest(f"n{i}")
        proposed.append((config["lambda_esp"], config["lambda_lsa"]))
        plan.search_alg.on_trial_complete(f"n{i}", {"asr_text": earlier_values(i, 4)["asr_text"],
                                                     "util_text": earlier_values(i, 4)["util_text"], "final": 1.0})
    assert sorted(proposed) == sorted(ALL - {(0.0, 0.0), (2.0, 0.0)})
    # another training seed: the earlier runs are evidence, not this sweep's runs; nothing is reused
    other = load_spec(new_spec(tmp_path, name="other.yaml", search=search, train={"seed": 7}))
    plan = build_search(other, prior=load_prior(str(earlier), other).trials)
    assert plan.reused == () and plan.num_samples == 6 and len(plan.search_alg._ot_study.trials) == 3
    # every configuration of the space finished earlier: refused before anything launches
    small = load_spec(new_spec(tmp_path, name="small.yaml", search=search,
                               space={"lambda_esp": {"grid": [0.0, 2.0]}, "lambda_lsa": {"choice": [0.0]}}))
    with pytest.raises(ConfigError, match="every configuration of this space finished in the earlier sweep"):
        build_search(small, prior=load_prior(str(earlier), small).trials)


def test_finite_points_enumerates_grids_choices_and_integer_ranges_only():
    from sweeps.space import finite_points, parse_dimension

    dims = {"a": parse_dimension("a", {"grid": [1, 2]}), "b": parse_dimension("b", {"int": [5, 7]}),
            "c": parse_dimension("c", {"choice": ["x"]})}
    assert finite_points(dims) == [{"a": a, "b": b, "c": "x"} for a in (1, 2) for b in (5, 6, 7)]
    dims["d"] = parse_dimension("d", {"uniform": [0.0, 1.0]})
    assert finite_points(dims) is None
    assert finite_points({"k": parse_dimension("k", {"int": [0, 10**6]})}) is None  # too many to enumerate


def test_validate_counts_the_trials_a_finite_space_allows(tmp_path):
    from sweeps.search import build_search
    from sweeps.spec import describe, load_spec

    spec = load_spec(new_spec(tmp_path, search={"algorithm": "nsga2", "num_samples": 10, "max_concurrent": 1}))
    assert describe(spec).startswith("spec 'tiny' is valid: 6 trial(s) (samples: the space has 6 configuration(s) "
                                     "and none runs twice), search nsga2")
    plan = build_search(spec)
    assert plan.num_samples == 6 and plan.reused == ()
    assert plan.notes == ["nsga2: search.num_samples=10 but the space has 6 configuration(s) not yet run, and none "
                          "runs twice: the search ends after 6"]
    fewer = load_spec(new_spec(tmp_path, name="fewer.yaml", search={"algorithm": "tpe", "num_samples": 4}))
    assert "4 trial(s) (samples), search tpe" in describe(fewer) and build_search(fewer).notes == []


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_real_tpe_sweep_runs_each_configuration_of_a_small_space_once(tmp_path, capsys):
    """Two workers, 2 x 2 configurations and num_samples 6: four trials, each configuration once."""
    import sweeps
    from tests.test_sweep_run import _rows, tiny_spec

    path = tiny_spec(tmp_path, search={"algorithm": "tpe", "num_samples": 6, "max_concurrent": 2, "seed": 2})
    outcome = sweeps.run(str(path), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 4
    finals = sorted((r["lambda_esp"], r["lambda_lsa"]) for r in _rows(tmp_path / "sweep") if r["status"] == "finished")
    assert finals == [(0.0, 0.0), (0.0, 0.1), (2.0, 0.0), (2.0, 0.1)]
    assert "tpe: search.num_samples=6 but the space has 4 configuration(s) not yet run" in capsys.readouterr().err
