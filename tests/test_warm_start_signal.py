"""Warm starts say first when the earlier sweep's ranking by an objective is mostly training-seed
noise (its signal share, ICC(1) over training seeds, below 0.5), and go on: a warning, no refusal.
The earlier folders hold real result rows of 4 configurations x 4 training seeds whose objective
values are seeded draws: pure seed noise, or configuration effects far above the seed noise."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.warm_start_folders import EARLIER, earlier_folder, new_spec

CONFIGS = [{"lambda_esp": e, "lambda_lsa": s, "lr": 1e-3} for e in (0.0, 2.0) for s in (0.0, 0.1)]
SEEDS = 4
TRIALS = [({**params, "seed": seed}, (2, 4), "finished") for params in CONFIGS for seed in range(SEEDS)]
TPE = {"algorithm": "tpe", "num_samples": 4, "seed": 3}


def draws(*, noise_only: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
    """Final value of each trial (trial ``i`` is configuration ``i // SEEDS``) per objective: seed noise
    (sd 0.02) alone for the metrics in ``noise_only``, else configuration steps of 0.1 plus seed noise
    of sd 0.005."""
    rng = np.random.default_rng(seed)
    config = np.arange(len(TRIALS)) // SEEDS
    out = {}
    for metric in ("asr_text", "util_text"):
        out[metric] = (0.3 + rng.normal(0.0, 0.02, len(TRIALS)) if metric in noise_only
                       else 0.2 + 0.1 * config + rng.normal(0.0, 0.005, len(TRIALS)))
    return out


def icc1(values: np.ndarray) -> float:
    """ICC(1) of a balanced one-way layout (rows: configurations, columns: seeds), from the textbook
    ANOVA: MSB = n sum (mean_i - mean)^2 / (a - 1), MSW = sum (y_ij - mean_i)^2 / (a (n - 1)),
    between = (MSB - MSW) / n, ICC(1) = between / (between + MSW)."""
    a, n = values.shape
    means = values.mean(axis=1)
    msb = n * ((means - values.mean()) ** 2).sum() / (a - 1)
    msw = ((values - means[:, None]) ** 2).sum() / (a * (n - 1))
    between = (msb - msw) / n
    return float(between / (between + msw))


def _values(final: dict[str, np.ndarray]):
    """``earlier_folder``'s values: ``final`` at the last step, 0.5 before; the guidance scale the
    trainer reports is one number for one encoder and prompt data."""
    return lambda i, step: {"concept_guidance_scale": 18.1,
                            **{m: float(v[i]) if step == 4 else 0.5 for m, v in final.items()}}


def _validate(capsys, spec, earlier) -> tuple[str, str]:
    from sweeps.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["sweep", "validate", str(spec), "--warm-start", str(earlier)])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    return out, err


LINE = re.compile(r"^warning: (\w+) in the earlier sweep (\S+): signal share (-?\d+\.\d\d) \[(-?\d+\.\d\d), "
                  r"(-?\d+\.\d\d)\] \(training seeds (\d+) x (\d+) configurations\) is below 0\.5: .*; a warm "
                  r"start from that sweep may not help", re.M)


def test_a_warm_start_from_a_sweep_whose_ranking_is_seed_noise_warns_and_goes_on(tmp_path, capsys):
    final = draws(noise_only=("asr_text",), seed=7)
    earlier = earlier_folder(tmp_path, TRIALS, values=_values(final), seeds=SEEDS)
    out, err = _validate(capsys, new_spec(tmp_path, search=TPE), earlier)
    assert f"{len(TRIALS)} earlier trial(s) ({len(TRIALS)} finished" in out
    found = LINE.findall(err)
    assert [f[0] for f in found] == ["asr_text"], err  # util_text's configuration steps are signal
    metric, source, share, lo, hi, seeds, configs = found[0]
    expected = icc1(final["asr_text"].reshape(len(CONFIGS), SEEDS))
    assert expected < 0.5 and share == f"{expected:.2f}", (share, expected)
    assert source == str(earlier) and (int(seeds), int(configs)) == (SEEDS, len(CONFIGS))
    assert float(lo) <= float(hi)
    # `sage reliability` on the earlier folder says the same (its own grouping, by every setting column)
    from analysis.reliability import reliability_table

    table = reliability_table(str(earlier), objectives=["asr_text"]).iloc[0]
    assert (f"{table['signal_share']:.2f}", table["seeds"], table["configs"]) == (share, seeds, len(CONFIGS))
    assert icc1(final["util_text"].reshape(len(CONFIGS), SEEDS)) > 0.9  # why util_text has no line
    # A grid with the same seeds reuses those 16 runs (the seed is one of its dimensions there): the same line
    out, grid_err = _validate(capsys, new_spec(tmp_path, name="grid.yaml", seeds=SEEDS), earlier)
    assert "16 configuration run(s) finished in the earlier sweep are reused" in out, out
    assert LINE.findall(grid_err) == found, grid_err


def test_no_warning_when_the_earlier_ranking_is_signal_or_cannot_be_measured(tmp_path, capsys):
    for sub in ("signal", "one"):
        (tmp_path / sub).mkdir()
    final = draws(noise_only=(), seed=7)
    earlier = earlier_folder(tmp_path / "signal", TRIALS, values=_values(final), seeds=SEEDS)
    for metric, v in final.items():  # both objectives: configuration steps far above the seed noise
        assert icc1(v.reshape(len(CONFIGS), SEEDS)) > 0.9, metric
    out, err = _validate(capsys, new_spec(tmp_path / "signal", search=TPE), earlier)
    assert f"{len(TRIALS)} earlier trial(s)" in out and "signal share" not in err, err
    # One training seed per configuration: no seed noise to measure, nothing said.
    one_seed = earlier_folder(tmp_path / "one", EARLIER[:3])
    out, err = _validate(capsys, new_spec(tmp_path / "one", search=TPE), one_seed)
    assert "3 earlier trial(s)" in out and "signal share" not in err, err
