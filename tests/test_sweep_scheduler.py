"""Pareto successive halving: pinned Pareto math, a real Tune run on a synthetic trainable, and
Optuna told PRUNED (not COMPLETE with partial values) for early-stopped trials."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.dominance import crowding_distance, minimised, nondominated_ranks, objective_signs
from sweeps.pareto_scheduler import ParetoSuccessiveHalving, SchedulerStateCallback, keeps_at_rung, strictly_ahead
from tests.pareto_oracle import brute_rank_crowding, minimise


def test_nondominated_ranks_pinned():
    pts = np.array([[0.1, -0.9], [0.2, -0.95], [0.05, -0.8], [0.5, -0.5], [0.6, -0.4], [0.3, -0.3]])
    assert nondominated_ranks(pts).tolist() == [0, 0, 0, 1, 2, 1]


def test_crowding_distance_pinned():
    pts = np.array([[0.0, 1.0], [0.25, 0.5], [1.0, 0.0]])
    # inner point: (1.0 - 0.0)/1 + (1.0 - 0.0)/1 = 2
    assert crowding_distance(pts).tolist() == [math.inf, 2.0, math.inf]
    assert strictly_ahead(np.array([[0.0, 1.0], [0.25, 0.5], [1.0, 0.0], [0.5, 0.6]]), 3) == 3


def test_minimised_flips_max_and_makes_nan_worst():
    signs = objective_signs(["asr", "util"], ["min", "max"])
    assert minimised([0.2, 0.9], signs).tolist() == [0.2, -0.9]
    assert minimised([float("nan"), None], signs).tolist() == [math.inf, math.inf]


def test_keeps_top_fraction_with_ties_to_the_trial_being_decided():
    pts = np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4]])
    assert [keeps_at_rung(pts, i, eta=2) for i in range(4)] == [True, True, False, False]
    assert keeps_at_rung(np.array([[0.1, 0.1]]), 0, eta=3)


def test_twins_at_a_rung_are_ties_whatever_their_arrival_order():
    # Configurations that differ only in a regularizer that has not acted yet report identical
    # objectives (the recorded MiniLM curves: four lambda_esp values per group at step 6). Nothing
    # tells them apart, so they get one crowding distance and the same decision in either order.
    pts = np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    assert crowding_distance(pts).tolist() == [math.inf, 2.0, 2.0, math.inf]
    assert crowding_distance(pts[[0, 1, 3, 2]]).tolist() == [math.inf, 2.0, math.inf, 2.0]
    assert crowding_distance(np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])).tolist() == [math.inf] * 3
    # inner twins whose neighbours sit at different gaps: a stable sort gave the first copy
    # 0.75 and the second 1.25, so one was strictly ahead of the other
    rung = np.array([[0.0, 1.0], [0.25, 0.5], [0.25, 0.5], [1.0, 0.0]])
    assert crowding_distance(rung).tolist() == [math.inf, 2.0, 2.0, math.inf]
    assert strictly_ahead(rung, 1) == strictly_ahead(rung, 2) == 2
    assert keeps_at_rung(rung, 1, eta=3) == keeps_at_rung(rung, 2, eta=3)


def test_state_survives_a_new_scheduler(tmp_path):
    path = tmp_path / "state.json"
    a = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1], eta=2, state_path=path)
    saver = SchedulerStateCallback(a)  # as the runner wires it
    assert a.decide("t1", {"step": 1, "asr": 0.1, "util": 0.9}) == "CONTINUE"
    assert not path.exists()
    saver.get_state()  # what Tune's experiment-state save calls
    b = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1], eta=2, state_path=path)
    assert b.decide("t2", {"step": 1, "asr": 0.5, "util": 0.5}) == "STOP"  # dominated by t1 from the file
    assert b.pruned == {"t2": 1}


def test_state_is_written_when_tune_saves_its_experiment_state_only(tmp_path):
    from ray.tune.callback import CallbackList

    from sweeps.pareto_scheduler import read_state

    path = tmp_path / "state.json"
    sched = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1, 2], eta=2,
                                    state_path=path)
    tune_callbacks = CallbackList([SchedulerStateCallback(sched)])
    assert sched.decide("t1", {"step": 1, "asr": 0.1, "util": 0.9}) == "CONTINUE"
    assert sched.decide("t2", {"step": 1, "asr": 0.5, "util": 0.5}) == "STOP"
    assert not path.exists()  # a decision writes nothing
    # Tune's experiment-state save (TuneController.save_to_dir) calls this with its staging folder:
    # the scheduler writes its own file and gives Tune nothing to pickle.
    tune_callbacks.save_to_dir(str(tmp_path / "staging"), session_str="s")
    assert read_state(path) == ({1: {"t1": [0.1, -0.9], "t2": [0.5, -0.5]}}, {"t2": 1})
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())
    stamp = path.stat().st_mtime_ns
    assert not sched.write_state() and path.stat().st_mtime_ns == stamp  # nothing new: not rewritten
    assert sched.decide("t1", {"step": 2, "asr": 0.1, "util": 0.9}) == "CONTINUE"
    assert read_state(path)[0].keys() == {1}  # still the saved view until the next save
    tune_callbacks.save_to_dir(str(tmp_path / "staging"), session_str="s")
    assert read_state(path)[0] == {1: {"t1": [0.1, -0.9], "t2": [0.5, -0.5]}, 2: {"t1": [0.1, -0.9]}}
    # Without the callback (a sweep started before it, resumed from its tuner.pkl) every decision writes.
    alone = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1], eta=2,
                                    state_path=tmp_path / "alone.json")
    alone.decide("t1", {"step": 1, "asr": 0.1, "util": 0.9})
    assert read_state(tmp_path / "alone.json") == ({1: {"t1": [0.1, -0.9]}}, {})


# Decisions recorded from the scheduler before the one-implementation refactor: 24 trials on a
# 5-level grid (ties and duplicates), 10% NaN, rungs 1-3 in a seeded arrival order; C = CONTINUE.
PINNED_DECISIONS = {
    (1, 2): "CSSSCSSCCSSCCCSSCCCCCCCCCCSCSSSSSCCCSSSSSCCSSSSCSSSCSSCSSSSSSSCSSSCCSSCC",
    (2, 3): "CCCSCSSSCSCSCCSCCSCSSSSSSCCSSSSSSSSSSSSSSSCCSCSCCCSCSSSSSSSSSSSSSCSSSSSS",
    (3, 2): "CSCSCCCSCSCSSCCCSCSCCSCSCSSCSSCSSSCSCSSCCSSSSCSCSCSCSSSCSSSSCSSSCCSSCSSS",
}


def _stream(seed: int, n: int = 24):
    rng = np.random.default_rng(seed)
    vals = rng.integers(0, 5, size=(n, 3, 2)) / 5  # per trial and rung: (asr, tifa)
    vals[rng.random((n, 3)) < 0.1] = np.nan
    for rung in (1, 2, 3):
        for t in rng.permutation(n):
            yield f"t{t:02d}", {"step": rung, "total_steps": 4, "asr": float(vals[t, rung - 1, 0]),
                                "tifa": float(vals[t, rung - 1, 1])}


def _oracle_decisions(seed: int, eta: int) -> str:
    """Successive halving by the definition: NSGA-II order from brute-force ranks and crowding."""
    recorded: dict[int, dict[str, list[float]]] = {}
    pruned: set[str] = set()
    out = []
    for trial, result in _stream(seed):
        if trial in pruned:
            out.append("S")
            continue
        rows = recorded.setdefault(result["step"], {})
        rows[trial] = minimise([[result["asr"], result["tifa"]]], [1, -1])[0].tolist()
        ids = list(rows)
        ranks, crowd = brute_rank_crowding(np.asarray([rows[i] for i in ids]))
        me = ids.index(trial)
        ahead = sum(1 for i in range(len(ids))
                    if ranks[i] < ranks[me] or (ranks[i] == ranks[me] and crowd[i] > crowd[me]))
        keep = ahead < math.ceil(len(ids) / eta)
        if not keep:
            pruned.add(trial)
        out.append("C" if keep else "S")
    return "".join(out)


@pytest.mark.numerics
@pytest.mark.parametrize("seed,eta", sorted(PINNED_DECISIONS))
def test_rung_decisions_stay_as_recorded_and_match_the_definition(seed: int, eta: int):
    sched = ParetoSuccessiveHalving(metrics=["asr", "tifa"], modes=["min", "max"], rungs=[1, 2, 3], eta=eta)
    got = "".join(sched.decide(trial, result)[0] for trial, result in _stream(seed))
    assert got == PINNED_DECISIONS[(seed, eta)]
    assert got == _oracle_decisions(seed, eta)


def test_modes_must_agree_with_the_metric_registry():
    from sage_core.defs.errors import QueryError

    with pytest.raises(QueryError, match="mode 'max' of objective 'asr' disagrees with the metric registry"):
        ParetoSuccessiveHalving(metrics=["asr", "tifa"], modes=["max", "max"])


# Objectives (asr to minimise, util to maximise) that do not change with the step.
POINTS = {"A": (0.1, 0.9), "B": (0.2, 0.95), "C": (0.05, 0.8), "D": (0.5, 0.5), "E": (0.6, 0.4), "F": (0.3, 0.3)}


def _synthetic(config):
    from ray import tune

    asr, util = POINTS[config["name"]]
    for step in (1, 2, 3):
        tune.report({"step": step, "total_steps": 3, "final": float(step == 3), "asr": asr, "util": util})


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_scheduler_stops_dominated_trials_at_rung_one(ray_local, tmp_path):
    from ray import tune

    scheduler = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1, 2], eta=2)
    tuner = tune.Tuner(
        _synthetic, param_space={"name": tune.grid_search(list(POINTS))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="synthetic", verbose=0))
    grid = tuner.fit()
    last = {r.config["name"]: int(r.metrics["step"]) for r in grid}
    assert last == {"A": 3, "B": 3, "C": 3, "D": 1, "E": 1, "F": 1}


def test_optuna_is_told_pruned_for_early_stopped_trials():
    import optuna
    from optuna.trial import TrialState

    from sweeps.search import _optuna_search_class

    search = _optuna_search_class()(space={"x": optuna.distributions.FloatDistribution(0, 1)},
                                    metric=["asr", "util"], mode=["min", "max"],
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    search.suggest("t1")
    search.suggest("t2")
    search.suggest("t3")
    search.on_trial_complete("t1", {"asr": 0.3, "util": 0.6, "step": 1, "final": 0.0})   # stopped at a rung
    search.on_trial_complete("t2", {"asr": 0.1, "util": 0.9, "step": 3, "final": 1.0})   # ran to the end
    search.on_trial_complete("t3", None, error=True)
    states = [t.state for t in search._ot_study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL]
    assert search._ot_study.trials[1].values == [0.1, 0.9]


# -- noise_aware=True: stop only what is outside the top 1/eta AND dominated beyond the intervals --
def _interval_stream(seed: int, n: int = 20):
    """Results with bootstrap intervals of random width (some results without them), rungs 1-2."""
    rng = np.random.default_rng(seed)
    vals = rng.uniform(0, 1, size=(n, 2, 2))  # per trial and rung: (asr, tifa)
    half = rng.uniform(0, 0.3, size=(n, 2, 2))
    bare = rng.random((n, 2)) < 0.2
    for rung in (1, 2):
        for t in rng.permutation(n):
            result = {"step": rung, "total_steps": 3, "asr": float(vals[t, rung - 1, 0]),
                      "tifa": float(vals[t, rung - 1, 1])}
            if not bare[t, rung - 1]:
                for k, m in enumerate(("asr", "tifa")):
                    result[f"{m}_lo"] = float(vals[t, rung - 1, k] - half[t, rung - 1, k])
                    result[f"{m}_hi"] = float(vals[t, rung - 1, k] + half[t, rung - 1, k])
            yield f"t{t:02d}", result


def _oracle_noise_aware(stream, eta: int) -> str:
    """The rule by its definition, brute force: intervals as [lo, hi] in the metric's own direction."""
    seen: dict[int, dict[str, dict]] = {}
    pruned: set[str] = set()
    out = []
    for trial, result in stream:
        if trial in pruned:
            out.append("S")
            continue
        rows = seen.setdefault(result["step"], {})
        rows[trial] = result
        ids = list(rows)
        pts = minimise([[rows[i]["asr"], rows[i]["tifa"]] for i in ids], [1, -1])
        ranks, crowd = brute_rank_crowding(pts)

        def ahead(k: int) -> int:
            return sum(1 for i in range(len(ids))
                       if ranks[i] < ranks[k] or (ranks[i] == ranks[k] and crowd[i] > crowd[k]))

        def interval(r: dict, m: str) -> tuple[float, float]:  # (worst-case bound, best-case bound) of the interval
            lo, hi = r.get(f"{m}_lo", r[m]), r.get(f"{m}_hi", r[m])
            half = (hi - lo) / 2
            return (r[m] - half, r[m] + half)

        me = ids.index(trial)
        cut = math.ceil(len(ids) / eta)
        beaten = False
        for q in range(len(ids)):
            if q == me or ahead(q) >= cut:
                continue
            a_lo, a_hi = interval(rows[ids[q]], "asr")
            b_lo, b_hi = interval(result, "asr")
            u_lo, u_hi = interval(rows[ids[q]], "tifa")
            v_lo, v_hi = interval(result, "tifa")
            if a_hi < b_lo and u_lo > v_hi:  # asr: q's whole interval below; tifa (max): above
                beaten = True
        keep = ahead(me) < cut or not beaten
        if not keep:
            pruned.add(trial)
        out.append("C" if keep else "S")
    return "".join(out)


@pytest.mark.parametrize("seed,eta", [(0, 2), (1, 2), (3, 3), (4, 3)])
def test_noise_aware_rung_decisions_match_a_brute_force_definition(seed: int, eta: int):
    sched = ParetoSuccessiveHalving(metrics=["asr", "tifa"], modes=["min", "max"], rungs=[1, 2], eta=eta,
                                    noise_aware=True)
    got = "".join(sched.decide(trial, result)[0] for trial, result in _interval_stream(seed))
    assert got == _oracle_noise_aware(_interval_stream(seed), eta)
    plain = ParetoSuccessiveHalving(metrics=["asr", "tifa"], modes=["min", "max"], rungs=[1, 2], eta=eta)
    base = "".join(plain.decide(trial, result)[0] for trial, result in _interval_stream(seed))
    # At the first rung (the same results reach it in both) the option only keeps more: every trial it
    # stops there, the default stops too; over the whole stream it keeps more trials going.
    assert all(b == "S" for g, b in zip(got[:20], base[:20]) if g == "S")
    assert got.count("C") > base.count("C")


def test_noise_aware_hand_made_rung():
    sched = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1], eta=2, noise_aware=True)
    assert sched.decide("a", {"step": 1, "asr": 0.10, "asr_lo": 0.05, "asr_hi": 0.15,
                              "util": 0.90, "util_lo": 0.85, "util_hi": 0.95}) == "CONTINUE"
    # Dominated by a, but the asr intervals overlap ([0.12, 0.28] vs [0.05, 0.15]): kept.
    assert sched.decide("b", {"step": 1, "asr": 0.20, "asr_lo": 0.12, "asr_hi": 0.28,
                              "util": 0.50, "util_lo": 0.45, "util_hi": 0.55}) == "CONTINUE"
    # Dominated by a with disjoint intervals in both objectives: stopped.
    assert sched.decide("c", {"step": 1, "asr": 0.30, "asr_lo": 0.25, "asr_hi": 0.35,
                              "util": 0.50, "util_lo": 0.45, "util_hi": 0.55}) == "STOP"
    # No interval (half-width 0), last of 4 (a and b are the top 2): stopped, as 0.4 > 0.10 + 0.05 and
    # 0.3 < 0.90 - 0.05 put a beyond noise.
    assert sched.decide("d", {"step": 1, "asr": 0.40, "util": 0.30}) == "STOP"
    # The default stops b (dominated by a, outside the top 1 of 2).
    plain = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1], eta=2)
    plain.decide("a", {"step": 1, "asr": 0.10, "util": 0.90})
    assert plain.decide("b", {"step": 1, "asr": 0.20, "util": 0.50}) == "STOP"


def test_noise_aware_widths_survive_a_new_scheduler(tmp_path):
    path = tmp_path / "state.json"
    kw = dict(metrics=["asr", "util"], modes=["min", "max"], rungs=[1], eta=2, state_path=path, noise_aware=True)
    a = ParetoSuccessiveHalving(**kw)
    assert a.decide("t1", {"step": 1, "asr": 0.1, "asr_lo": 0.0, "asr_hi": 0.4,
                           "util": 0.9, "util_lo": 0.8, "util_hi": 1.0}) == "CONTINUE"
    a.write_state()
    b = ParetoSuccessiveHalving(**kw)
    # 0.3 is within t1's asr interval only if its width was kept (0.1 + 0.2 + 0 > 0.3 - 0 is False => overlap).
    assert b.decide("t2", {"step": 1, "asr": 0.3, "util": 0.5}) == "CONTINUE"
    c = ParetoSuccessiveHalving(**{**kw, "noise_aware": False, "state_path": tmp_path / "other.json"})
    c.decide("t1", {"step": 1, "asr": 0.1, "util": 0.9})
    assert c.decide("t2", {"step": 1, "asr": 0.3, "util": 0.5}) == "STOP"
