"""analysis.calibration: Kendall/Spearman with seeded bootstrap intervals, early vs final text rows,
"no variation" instead of NaN, and the stored ``calibration`` table (real Parquet, real DuckDB)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

import analysis
from analysis.calibration import (bootstrap_interval, calibration_display, calibration_report, calibration_table,
                                  calibration_trials, kendall_tau_b, read_calibration, spearman_rho,
                                  write_calibration)
from sage_core.defs.errors import StorageError
from analysis.store import ResultStore


def test_vectorised_statistics_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(40, 7)).astype(float)  # many ties, some constant rows
    y = rng.integers(0, 3, size=(40, 7)).astype(float)
    x[0] = 2.0  # a constant row: no rank correlation
    tau, rho = kendall_tau_b(x, y), spearman_rho(x, y)
    for i in range(len(x)):
        want_tau, want_rho = kendalltau(x[i], y[i]).statistic, spearmanr(x[i], y[i]).statistic
        if np.isnan(want_tau):
            assert np.isnan(tau[i]) and np.isnan(rho[i])
        else:
            assert tau[i] == pytest.approx(want_tau, abs=1e-12) and rho[i] == pytest.approx(want_rho, abs=1e-12)
    assert np.isnan(tau[0])


def test_bootstrap_interval_is_the_seeded_percentile_interval():
    """The same interval from an explicit loop over the same seeded resamples with scipy."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=9)
    y = x + rng.normal(scale=0.8, size=9)
    lo, hi, used = bootstrap_interval(x, y, stat=kendall_tau_b, resamples=400, seed=11)
    idx = np.random.default_rng(11).integers(0, 9, size=(400, 9))
    vals = np.array([kendalltau(x[i], y[i]).statistic for i in idx])
    vals = vals[~np.isnan(vals)]
    assert used == len(vals)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(vals, [2.5, 97.5])))
    assert lo <= kendalltau(x, y).statistic <= hi
    assert bootstrap_interval(x, y, stat=kendall_tau_b, resamples=400, seed=11)[:2] == (lo, hi)  # seeded
    assert bootstrap_interval(x, y, stat=kendall_tau_b, resamples=400, seed=12)[:2] != (lo, hi)


def _trials(n: int = 6, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        asr = i / n
        out.append({"concept_auc": 0.5 + asr / 2, "asr": asr,            # same order: tau = 1
                    "concept_auc_x": asr, "asr_x": asr ** 2,            # a per-set pair, same order
                    "asr_text_selfcal_x": rng.random(),                 # its own family: ~ asr_x
                    "util_sib": 0.5, "tifa": 0.9 - asr / 4,             # a constant proxy
                    "util_sib_color": -asr, "tifa_color": 1 - asr,      # per category, same order
                    "spread_dev": asr, "asr_text": 0.0})                # tifa falls as spread_dev rises
    return out


def test_report_pairs_directions_and_no_variation():
    rep = {(e["text"], e["image"]): e for e in calibration_report(_trials(), resamples=300)}
    assert ("concept_auc", "asr") in rep and ("concept_auc_x", "asr_x") in rep
    assert ("util_sib_color", "tifa_color") in rep
    # asr_text_selfcal_x belongs to the asr_text_selfcal family (~ asr_x), not to asr_text (~ asr_selfcal_x)
    assert [i for t, i in rep if t == "asr_text_selfcal_x"] == ["asr_x"]
    e = rep[("concept_auc", "asr")]
    assert e["n"] == 6 and e["expected"] == 1
    assert e["kendall"] == pytest.approx(1.0) and e["spearman"] == pytest.approx(1.0)
    assert e["kendall_lo"] == pytest.approx(1.0) and e["kendall_hi"] == pytest.approx(1.0)  # every resample agrees
    assert rep[("concept_auc_x", "asr_x")]["kendall"] == pytest.approx(1.0)
    assert rep[("spread_dev", "tifa")]["expected"] == -1 and rep[("spread_dev", "tifa")]["kendall"] == pytest.approx(-1.0)
    flat = rep[("util_sib", "tifa")]
    assert flat["note"] == "no variation in util_sib (every trial 0.5)"
    assert all(flat[k] is None for k in ("kendall", "kendall_lo", "kendall_hi", "spearman", "spearman_lo",
                                         "spearman_hi"))  # no NaN anywhere
    both = rep[("asr_text", "asr")]
    assert both["note"].startswith("no variation in asr_text")
    shown = {(d["text"], d["image"]): d for d in calibration_display(list(rep.values()))}
    assert shown[("util_sib", "tifa")]["kendall"] == "no variation"
    assert shown[("concept_auc", "asr")]["kendall"] == "1.000 [1.000, 1.000]"
    few = calibration_report(_trials(2), resamples=50)
    assert all(e["kendall"] is None and "needs 3 or more" in (e["note"] or "") for e in few
               if not (e["note"] or "").startswith("no variation"))


def _rows(sweep: str = "s1") -> list[dict]:
    """4 trials, text rows at steps 20/40/60, image rows at 60; the early and final text orders differ.
    t4 has no image row, t5's image row failed."""
    early = {"t1": 0.9, "t2": 0.8, "t3": 0.7, "t4": 0.1, "t5": 0.5}   # concept_auc at step 20
    final = {"t1": 0.6, "t2": 0.7, "t3": 0.8, "t4": 0.5, "t5": 0.5}   # concept_auc at step 60
    asr = {"t1": 0.1, "t2": 0.2, "t3": 0.3, "t5": 0.0}
    rows = []
    for t in early:
        for step in (20, 40, 60):
            value = early[t] if step == 20 else (final[t] if step == 60 else 0.5)
            rows.append({"sweep_id": sweep, "trial_id": t, "step": step, "fidelity": "text",
                         "status": "finished" if step == 60 else "running", "concept_auc": value,
                         "util_sib": 0.9 - value / 10})
        if t in asr:
            rows.append({"sweep_id": sweep, "trial_id": t, "step": 60, "fidelity": "image",
                         "status": "failed" if t == "t5" else "finished", "asr": asr[t], "tifa": 0.7 - asr[t]})
    return rows


def test_trials_take_the_final_or_the_first_rung_text_row():
    final = {t["trial_id"]: t for t in calibration_trials(_rows(), text_at="final")}
    early = {t["trial_id"]: t for t in calibration_trials(_rows(), text_at="early")}
    at40 = {t["trial_id"]: t for t in calibration_trials(_rows(), text_at="early", early_step=40)}
    assert sorted(final) == sorted(early) == ["t1", "t2", "t3"]  # t4: no image row; t5: its image row failed
    assert [final[t]["concept_auc"] for t in ("t1", "t2", "t3")] == [0.6, 0.7, 0.8]
    assert [early[t]["concept_auc"] for t in ("t1", "t2", "t3")] == [0.9, 0.8, 0.7]
    assert {t["_text_step"] for t in at40.values()} == {40} and all(t["asr"] is not None for t in at40.values())
    table = {(e["text_at"], e["text"], e["image"]): e for e in calibration_table(_rows(), resamples=200)}
    assert table[("final", "concept_auc", "asr")]["kendall"] == pytest.approx(1.0)
    assert table[("early", "concept_auc", "asr")]["kendall"] == pytest.approx(-1.0)  # early order reversed
    assert table[("early", "concept_auc", "asr")]["text_steps"] == "20"
    assert table[("final", "concept_auc", "asr")]["sweep_id"] == "s1"
    with pytest.raises(analysis.QueryError, match="text_at='late' is not allowed"):
        calibration_trials(_rows(), text_at="late")


def test_stored_table_is_a_view_beside_results(tmp_path: Path):
    store = ResultStore(tmp_path / "results")
    store.write(_rows())
    entries = calibration_table(_rows(), resamples=200)
    path = write_calibration(store, sweep_id="s1", entries=entries)
    assert Path(path).is_file() and "_calibration" in path
    assert not list(Path(path).parent.glob("_tmp-*"))  # written under a temporary name, renamed into place
    assert store.sweep_ids() == ["s1"] and len(store.read()) == len(_rows())  # not a results partition
    write_calibration(store, sweep_id="s1", entries=entries)  # replaced, never appended
    con = analysis.connect(tmp_path)
    try:
        got = con.sql("SELECT text_at, text, image, kendall, note FROM calibration ORDER BY ALL").fetchall()
        n_results = con.sql("SELECT count(*) FROM results").fetchall()[0][0]
    finally:
        con.close()
    assert len(got) == len(entries) and n_results == len(_rows())
    want = {(e["text_at"], e["text"], e["image"]): e["kendall"] for e in entries}
    for text_at, text, image, kendall, note in got:
        if want[(text_at, text, image)] is None:
            assert kendall is None and note.startswith("no variation")
        else:
            assert kendall == pytest.approx(want[(text_at, text, image)])
    page = analysis.write_report(tmp_path, tmp_path / "report").read_text()
    assert "Calibration: text proxies vs image metrics" in page and "stored by the image stage" in page
    assert "-1.000 [-1.000, -1.000]" in page


def test_report_computes_calibration_when_none_is_stored(tmp_path: Path):
    ResultStore(tmp_path / "results").write(_rows())
    con = analysis.connect(tmp_path)
    try:
        assert con.sql("SELECT count(*) FROM calibration").fetchall()[0][0] == 0  # an empty view, typed
    finally:
        con.close()
    page = analysis.write_report(tmp_path, tmp_path / "report").read_text()
    assert "computed from the rows (no stored table)" in page and "1.000 [1.000, 1.000]" in page


def test_a_damaged_calibration_file_is_named_or_skipped(tmp_path: Path):
    store = ResultStore(tmp_path / "results")
    store.write(_rows())
    path = Path(write_calibration(store, sweep_id="s1", entries=calibration_table(_rows(), resamples=50)))
    path.write_bytes(b"not parquet")
    with pytest.raises(StorageError, match=r"1 bad file\(s\).*calibration.parquet \(not readable as Parquet"):
        analysis.connect(tmp_path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        con = analysis.connect(tmp_path, skip_bad=True)
    try:
        assert con.sql("SELECT count(*) FROM results").fetchall()[0][0] == len(_rows())
        assert con.sql("SELECT count(*) FROM calibration").fetchall()[0][0] == 0
    finally:
        con.close()
    assert len(read_calibration(ResultStore(tmp_path / "results"), skip_bad=True)) == 0
    with pytest.raises(StorageError, match="sweep_id '../x' is not allowed"):
        write_calibration(store, sweep_id="../x", entries=[])


def test_sage_core_no_longer_holds_a_calibration_module():
    import importlib.util

    import sage_core.evaluation as evaluation

    assert importlib.util.find_spec("sage_core.evaluation.calibration") is None
    for name in ("calibration_report", "METRIC_DIRECTIONS", "CALIBRATION_PAIRS"):
        with pytest.raises(AttributeError):
            getattr(evaluation, name)


def test_eval_calibrate_needs_three_checkpoints_before_any_model_loads(tmp_path: Path, capsys):
    from sweeps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--calibrate", str(tmp_path / "a"), "--calibrate", str(tmp_path / "b"),
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--calibrate needs at least 3 checkpoints to rank (got 2)" in err
