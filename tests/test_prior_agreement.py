"""A warm start checks, once this sweep has rerun enough of the earlier sweep's configurations, whether
the earlier ranking holds: both sweeps' finals pooled per configuration, each objective's signal share
(ICC(1)) against a textbook computation, one line with every share and a warning for each below 0.5.
Earlier and new runs are seeded draws: configuration effects far above the noise for one objective,
noise alone for the other."""

from __future__ import annotations

import re

import numpy as np

from sweeps.prior_agreement import AFTER, PriorAgreement
from sweeps.warm_start import Prior, PriorTrial
from tests.test_warm_start_signal import icc1

CONFIGS = [{"lambda_esp": e, "lr": lr} for e in (0.0, 2.0, 4.0) for lr in (5e-5, 1e-4)]


def finals(rng: np.random.Generator) -> list[dict[str, float]]:
    """Per configuration: ``signal`` steps of 0.1 plus noise of sd 0.005, ``noise`` noise alone (sd 0.02)."""
    return [{"signal": 0.2 + 0.1 * i + rng.normal(0, 0.005), "noise": 0.3 + rng.normal(0, 0.02)}
            for i in range(len(CONFIGS))]


def prior(values: list[dict[str, float]]) -> Prior:
    trials = [PriorTrial(params={**c, "seed": 0}, metrics=v, rungs={}) for c, v in zip(CONFIGS, values, strict=True)]
    trials.append(PriorTrial(params={"lambda_esp": 8.0, "lr": 1e-4, "seed": 0}, metrics={}, rungs={}))  # stopped
    return Prior(source="runs/earlier", sweep_id="s0", trials=tuple(trials))


SHARES = re.compile(r"^warm start check, (\d+) configurations run in both sweeps: signal share signal "
                    r"(-?\d\.\d\d), noise (-?\d\.\d\d) \(both sweeps' finals pooled")
WARNING = re.compile(r"^warning: (\w+) between the earlier sweep runs/earlier and this one \(the first (\d+) "
                     r"configurations both ran, their runs pooled\): signal share (-?\d\.\d\d) \[(-?\d+\.\d\d), "
                     r"(-?\d+\.\d\d)\] \(training seeds 2 x (\d+) configurations\) is below 0\.5: .*the warm start "
                     r"may be steering this search by noise")


def test_the_check_runs_once_after_enough_shared_configurations_and_warns_on_noise():
    rng = np.random.default_rng(11)
    earlier, here = finals(rng), finals(rng)
    check = PriorAgreement(prior(earlier), ["signal", "noise"])
    # Not counted: a configuration the earlier sweep did not finish, a non-finite objective.
    assert check.observe({"lambda_esp": 8.0, "lr": 1e-4, "seed": 1}, {"signal": 0.1, "noise": 0.1}) == []
    assert check.observe({**CONFIGS[0], "seed": 1}, {"signal": float("nan"), "noise": 0.1}) == []
    order = [3, 0, 5, 1, 2, 4]
    out = []
    for n, i in enumerate(order, 1):
        lines = check.observe({**CONFIGS[i], "seed": 1}, here[i])  # another training seed: the same configuration
        assert (lines != []) == (n == AFTER), (n, lines)
        out += lines
    seen = sorted(order[:AFTER])
    want = {m: icc1(np.asarray([[earlier[i][m], here[i][m]] for i in seen])) for m in ("signal", "noise")}
    assert want["signal"] > 0.9 and want["noise"] < 0.5  # what the draws were made to be
    (shares,) = [SHARES.match(line).groups() for line in out if SHARES.match(line)]
    assert int(shares[0]) == AFTER
    assert abs(float(shares[1]) - want["signal"]) <= 0.0051 and abs(float(shares[2]) - want["noise"]) <= 0.0051
    warnings = [WARNING.match(line).groups() for line in out if WARNING.match(line)]
    assert len(out) == 2 and [w[0] for w in warnings] == ["noise"], out
    metric, first, share, lo, hi, configs = warnings[0]
    assert int(first) == int(configs) == AFTER and share == shares[2] and float(lo) <= float(hi)


def test_no_warning_when_the_earlier_ranking_holds():
    rng = np.random.default_rng(5)
    earlier = finals(rng)
    here = [{"signal": v["signal"] + rng.normal(0, 0.005), "noise": v["noise"] + rng.normal(0, 0.001)}
            for v in earlier]  # the "noise" objective repeats itself here: its ranking holds too
    check = PriorAgreement(prior(earlier), ["signal", "noise"], after=3)
    out = [line for i in range(3) for line in check.observe({**CONFIGS[i], "seed": 2}, here[i])]
    assert len(out) == 1 and out[0].startswith("warm start check, 3 configurations run in both sweeps"), out
    for m in ("signal", "noise"):
        assert icc1(np.asarray([[earlier[i][m], here[i][m]] for i in range(3)])) > 0.9
