"""Repeated training seeds and reliability: `seeds: N` in a spec, the signal share (ICC(1)) with its
bootstrap interval, rung-to-final tau, the least significant difference, `sage reliability`, the
warnings of `sage pareto` and of the Pareto scheduler; checked against independent computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.reliability import (least_significant_difference, one_way_anova, reliability_table, rung_agreement,
                                  signal_share, signal_share_interval)
from analysis.store import ResultStore
from sweeps.cli import main

BENCH = Path(__file__).resolve().parents[1] / "bench" / "data"


def brute_icc(values, groups) -> float:
    """ICC(1) from the textbook sums of squares, written out with loops over the groups."""
    by: dict = {}
    for v, g in zip(values, groups):
        by.setdefault(g, []).append(float(v))
    a, n_total = len(by), sum(len(v) for v in by.values())
    grand = sum(sum(v) for v in by.values()) / n_total
    ssb = sum(len(v) * (sum(v) / len(v) - grand) ** 2 for v in by.values())
    ssw = sum((x - sum(v) / len(v)) ** 2 for v in by.values() for x in v)
    msb, msw = ssb / (a - 1), ssw / (n_total - a)
    n0 = (n_total - sum(len(v) ** 2 for v in by.values()) / n_total) / (a - 1)
    sb2 = (msb - msw) / n0
    return sb2 / (sb2 + msw)


def synthetic(rng: np.random.Generator, *, configs: int, seeds, sd_b: float, sd_w: float):
    """Values of ``configs`` configurations with ``seeds`` runs each (an int, or one count per configuration)."""
    counts = [seeds] * configs if isinstance(seeds, int) else list(seeds)
    effects = rng.normal(0, sd_b, configs)
    groups = [f"c{i}" for i, n in enumerate(counts) for _ in range(n)]
    values = [effects[i] + rng.normal(0, sd_w) for i, n in enumerate(counts) for _ in range(n)]
    return np.asarray(values), groups


# --- the statistics -------------------------------------------------------------------------
def test_signal_share_is_the_textbook_icc_balanced_and_unbalanced():
    rng = np.random.default_rng(0)
    for seeds in (2, 3, [2, 3, 2, 4, 1, 3, 2, 5]):
        values, groups = synthetic(rng, configs=8, seeds=seeds, sd_b=1.0, sd_w=0.7)
        assert signal_share(values, groups) == pytest.approx(brute_icc(values, groups), abs=1e-12)
    # balanced: the classic (MSB - MSW) / (MSB + (k - 1) MSW)
    values, groups = synthetic(rng, configs=10, seeds=3, sd_b=0.5, sd_w=0.5)
    an = one_way_anova(values, groups)
    assert an.share == pytest.approx((an.msb - an.msw) / (an.msb + 2 * an.msw), abs=1e-12)


def test_signal_share_recovers_the_known_variance_split():
    # sigma_b^2 / (sigma_b^2 + sigma_w^2) = 0.2, 0.5, 0.8; 2,000 configurations x 4 seeds give a
    # standard error near 0.012, so 0.05 is over 4 standard errors
    rng = np.random.default_rng(1)
    for sd_b, truth in ((0.5, 0.2), (1.0, 0.5), (2.0, 0.8)):
        values, groups = synthetic(rng, configs=2000, seeds=4, sd_b=sd_b, sd_w=1.0)
        assert signal_share(values, groups) == pytest.approx(truth, abs=0.05)


def test_bootstrap_interval_covers_the_truth_at_about_its_level():
    rng = np.random.default_rng(2)
    hits = 0
    for rep in range(60):
        values, groups = synthetic(rng, configs=24, seeds=2, sd_b=1.0, sd_w=1.0)
        lo, hi = signal_share_interval(values, groups, resamples=1000, seed=rep)
        assert lo <= signal_share(values, groups) <= hi
        hits += lo <= 0.5 <= hi
    # a percentile bootstrap over 24 clusters under-covers a little; far below 95% would be a bug
    assert hits >= 48, hits


def test_least_significant_difference_is_where_a_two_sample_t_test_reaches_5_percent():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 5), rng.normal(0, 1, 5)
    an = one_way_anova(np.r_[a, b], ["a"] * 5 + ["b"] * 5)
    lsd = least_significant_difference(an, seeds=5)
    shifted = b - b.mean() + a.mean() + lsd  # the mean difference is exactly the LSD
    assert stats.ttest_ind(shifted, a).pvalue == pytest.approx(0.05, abs=1e-9)
    assert least_significant_difference(an, seeds=1) == pytest.approx(lsd * math.sqrt(5), rel=1e-12)


def test_rung_agreement_is_kendall_tau_against_each_trials_final_value():
    rng = np.random.default_rng(4)
    final = rng.normal(size=12)
    early = final + rng.normal(scale=0.8, size=12)
    trials = pd.DataFrame({"trial": [f"t{i}" for i in range(12)] * 2, "step": [5] * 12 + [10] * 12,
                           "final_step": 10, "value": np.r_[early, final]})
    tau, n = rung_agreement(trials)[5]
    assert n == 12 and tau == pytest.approx(stats.kendalltau(early, final).statistic, abs=1e-12)


# --- on a results store -----------------------------------------------------------------------
def _store(root: Path, rows: list[dict]) -> Path:
    ResultStore(root / "results").write(rows)
    return root


def _seeded_rows(rng: np.random.Generator, *, configs: int = 12, seeds: int = 3) -> list[dict]:
    """concept_auc: configurations differ a lot, seeds barely (signal); util_sib: seed noise only."""
    rows = []
    for c in range(configs):
        for s in range(seeds):
            for step in (10, 20):
                rows.append({"sweep_id": "sw", "trial_id": f"c{c}s{s}", "step": step, "fidelity": "text",
                             "status": "finished" if step == 20 else "running", "lambda_esp": float(c), "seed": s,
                             "concept_auc": 0.5 + 0.02 * c + rng.normal(0, 0.001),
                             "util_sib": 0.7 + rng.normal(0, 0.05)})
    return rows


def test_reliability_table_on_a_store_matches_brute_force(tmp_path):
    rows = _seeded_rows(np.random.default_rng(5))
    table = reliability_table(_store(tmp_path, rows), objectives=["concept_auc", "util_sib"]).set_index("objective")
    final = pd.DataFrame([r for r in rows if r["step"] == 20])
    for m in ("concept_auc", "util_sib"):
        assert table.loc[m, "signal_share"] == pytest.approx(brute_icc(final[m], final["lambda_esp"]), abs=1e-12)
        assert table.loc[m, "configs"] == 12 and table.loc[m, "seeds"] == "3"
        both = pd.DataFrame(rows).pivot_table(index="trial_id", columns="step", values=m)
        assert table.loc[m, "tau@10"] == pytest.approx(stats.kendalltau(both[10], both[20]).statistic, abs=1e-12)
    assert table.loc["concept_auc", "signal_share"] > 0.99 and table.loc["util_sib", "signal_share"] < 0.2


def _sage(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_reliability_and_pareto_warn_in_one_clean_line(tmp_path, capsys):
    root = _store(tmp_path, _seeded_rows(np.random.default_rng(6)))
    code, out, err = _sage(capsys, "reliability", str(root), "--objectives", "concept_auc,util_sib")
    assert code == 0 and "signal_share" in out and "tau@10" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: util_sib: signal share ") and "Warning:" not in err
    code, out, err = _sage(capsys, "pareto", str(root), "--x", "concept_auc", "--y", "util_sib")
    assert code == 0 and "Pareto front" in out
    assert err.strip().splitlines() == lines
    code, _, err = _sage(capsys, "reliability", str(root), "--objectives", "concept_aux")
    assert code == 2 and "concept_aux" in err and "did you mean 'concept_auc'" in err and "Traceback" not in err


def test_one_seed_per_configuration_says_what_is_missing(tmp_path):
    rows = [r for r in _seeded_rows(np.random.default_rng(7)) if r["seed"] == 0]
    table = reliability_table(_store(tmp_path, rows), objectives=["util_sib"])
    assert math.isnan(table.loc[0, "signal_share"]) and "seeds: N" in table.attrs["notes"][0]


def _bench_store(root: Path, tables: dict[int, str]) -> Path:
    """The recorded tables as one store, converted as bench/curves_reliability.py converts them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("curves_reliability", BENCH.parent / "curves_reliability.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return _store(root, module.store_rows({seed: BENCH / name for seed, name in tables.items()}))


def test_recorded_curves_two_seeds(tmp_path):
    """The two recorded 96-step tables: the signal share against a brute-force ICC of the raw files,
    and the rung taus of one seed against bench/RESULTS.md (printed there to two decimals)."""
    objectives = ["matched_auc", "concept_auc", "concept_auc_abs", "util_sib"]
    both = reliability_table(_bench_store(tmp_path / "both", {0: "sage_minilm_curves.parquet",
                                                              1: "sage_minilm_curves_seed1.parquet"}),
                             objectives=objectives).set_index("objective")
    raw = pd.concat([pd.read_parquet(BENCH / f) for f in ("sage_minilm_curves.parquet",
                                                          "sage_minilm_curves_seed1.parquet")])
    final = raw[raw["step"] == 96]
    for m in objectives:
        assert both.loc[m, "signal_share"] == pytest.approx(brute_icc(final[m], final["config_id"]), abs=1e-10)
        assert both.loc[m, "signal_share_lo"] < both.loc[m, "signal_share"] < both.loc[m, "signal_share_hi"]
    seed0 = reliability_table(_bench_store(tmp_path / "s0", {0: "sage_minilm_curves.parquet"}),
                              objectives=objectives).set_index("objective")
    results_md = {"matched_auc": (0.03, 0.47, 0.21, 0.14), "concept_auc": (0.16, 0.43, 0.28, 0.64),
                  "concept_auc_abs": (0.22, 0.37, 0.55, 0.66), "util_sib": (0.74, 0.52, 0.48, 0.72)}
    for m, taus in results_md.items():
        got = [seed0.loc[m, f"tau@{s}"] for s in (6, 12, 24, 48)]
        assert got == pytest.approx(taus, abs=0.005 + 1e-9)


# --- the Pareto scheduler's warning -------------------------------------------------------------
def test_scheduler_warns_once_when_enough_seeds_show_noise():
    from sweeps.pareto_scheduler import SeedNoiseWatch

    got: list[str] = []
    watch = SeedNoiseWatch(["concept_auc", "util_sib"], warn=got.append)
    rng = np.random.default_rng(8)
    seen = []
    for c in range(4):
        for s in range(2):
            result = {"step": 6, "concept_auc": 0.5 + 0.05 * c + rng.normal(0, 1e-3), "util_sib": rng.normal()}
            seen.append((c, result))
            watch.observe(f"t{c}{s}", result, {"lambda_esp": float(c), "seed": s})
            if c < 2:  # fewer than three configurations with two seeds: no estimate yet
                assert got == []
    assert len(got) == 1 and got[0].startswith("warning: util_sib at step 6: signal share ")
    share = brute_icc([r["util_sib"] for _, r in seen[:6]], [c for c, _ in seen[:6]])  # when it fired
    assert f"signal share {share:.2f} " in got[0] and share < 0.5
    watch.observe("t00", {"step": 12, "util_sib": 0.0, "concept_auc": 0.5}, {"lambda_esp": 0.0, "seed": 0})
    assert len(got) == 1  # once per objective
    # without a seed dimension trials are not repeats: nothing is estimated
    quiet = SeedNoiseWatch(["util_sib"], warn=got.append)
    for c in range(4):
        for s in range(2):
            quiet.observe(f"u{c}{s}", {"step": 6, "util_sib": rng.normal()}, {"lambda_esp": float(c)})
    assert len(got) == 1


# --- seeds: N in a spec ---------------------------------------------------------------------------
def test_spec_seeds_repeat_every_grid_point_and_resolve_to_the_seed_column():
    from sweeps.resolved_trial import resolve_trial
    from sweeps.spec import load_spec, spec_from_text
    from sweeps.spec_model import base_train_config, trial_count

    one = load_spec("ablation-components-cpu", check=False)
    three = load_spec("ablation-components-cpu", overrides={"seeds": 3, "train.seed": 5}, check=False)
    assert "seeds" not in one.to_yaml() and "seed" not in one.dimensions()
    assert three.dimensions()["seed"].grid == [5, 6, 7] and trial_count(three) == 3 * trial_count(one)
    assert spec_from_text(three.to_yaml(), where="saved").seeds == 3
    trial = resolve_trial("t", {"variant": "SAGE", "seed": 6}, base=base_train_config(three),
                          variants=three.variants)
    assert trial.config.seed == 6 and trial.columns["seed"] == 6


@pytest.mark.parametrize("overrides, words", [
    ({"seeds": 2, "search.algorithm": "random"}, "need algorithm 'grid'"),
    ({"seeds": 2, "space.seed": {"grid": [0, 1]}}, "space.seed: also set by seeds=2"),
    ({"seeds": 0}, "seeds"),
])
def test_spec_seeds_refused_where_they_cannot_work(overrides, words):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec

    with pytest.raises(ConfigError) as info:
        load_spec("quickstart", overrides=overrides, check=False)
    assert words in str(info.value) and "\n" not in str(info.value)
