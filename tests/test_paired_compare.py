"""Paired comparisons: per-prompt scores from the evaluator to the side table and back, the paired
bootstrap against brute force, the pairs that decide a front, and `sage pareto`'s marks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sage_core.defs.errors import StorageError
from analysis.paired_compare import (compare, deciding_pairs, draw_counts, front_comparisons, objective_value,
                                     replicates)
from analysis.prompt_scores import ScoreTable, read_prompt_scores, write_prompt_scores
from analysis.store import ResultStore
from sweeps.cli import main


def brute_auc(pos, neg) -> float:
    """P(pos > neg) + P(tie) / 2 over every pair, by a double loop."""
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def table_of(scores) -> ScoreTable:
    """A ScoreTable from a sage_core PromptScores (what the trial writes, without the file)."""
    cols = scores.columns()
    return ScoreTable(columns={k: (np.asarray(v, dtype=object) if k in ("metric", "part", "side", "pool") else v)
                               for k, v in cols.items()}, pools=scores.pools)


def synthetic(rng: np.random.Generator, *, auc_shift: float = 0.0, util_shift: float = 0.0, base=None):
    """Two attack sets against one benign pool (AUC objective, with ties) and a two-category mean objective."""
    from sage_core.evaluation.prompt_scores import PromptScores

    base = base or {"a": np.round(rng.normal(1, 1, 30), 1), "b": np.round(rng.normal(0.5, 1, 20), 1),
                    "benign": np.round(rng.normal(0, 1, 40), 1), "util": rng.normal(0.8, 0.1, 24)}
    rec = PromptScores()
    for part in ("a", "b"):
        rec.auc("concept_auc", part, base[part] - auc_shift, base["benign"],
                pos_pool=(f"attack:{part}", [f"{part}{i}" for i in range(len(base[part]))]),
                neg_pool=("benign", [f"n{i}" for i in range(40)]))
    cats = ["color"] * 10 + ["shape"] * 14
    rec.mean("util_sib", base["util"] + util_shift, strata=cats, items=[f"g{i}" for i in range(24)], pool="group")
    return rec, base


def test_replicates_equal_brute_force_on_the_resampled_prompts():
    rec, base = synthetic(np.random.default_rng(0))
    t = table_of(rec)
    assert objective_value(t, "concept_auc") == pytest.approx(
        (brute_auc(base["a"], base["benign"]) + brute_auc(base["b"], base["benign"])) / 2, abs=1e-12)
    counts = draw_counts(t.pools, reps=5, seed=3)
    auc_r, util_r = replicates(t, "concept_auc", counts), replicates(t, "util_sib", counts)
    for r in range(5):
        def take(pool, values):
            return np.repeat(values, counts[pool][r].astype(int))
        neg = take("benign", base["benign"])
        want = (brute_auc(take("attack:a", base["a"]), neg) + brute_auc(take("attack:b", base["b"]), neg)) / 2
        assert auc_r[r] == pytest.approx(want, abs=1e-12)
        u = base["util"]
        assert util_r[r] == pytest.approx((take("group:color", u[:10]).mean() + take("group:shape", u[10:]).mean()) / 2,
                                          abs=1e-12)


def test_a_uniform_gain_is_separable_though_the_marginal_intervals_overlap():
    rng = np.random.default_rng(1)
    rec_a, base = synthetic(rng)
    rec_b, _ = synthetic(rng, auc_shift=0.15, util_shift=0.01, base=base)  # every prompt a little better
    a, b = table_of(rec_a), table_of(rec_b)
    counts = draw_counts(a.pools, reps=2000, seed=0)
    got = compare(a, b, ["concept_auc", "util_sib"], counts=counts)
    # lower attack scores can only lower each resampled AUC, higher utility raise each mean: B dominates
    # in every replicate where some pair changes order, which is all of them here
    assert got["verdict"] == "B dominates" and got["p_b"] == 1.0 and got["p_a"] == 0.0
    for m in ("concept_auc", "util_sib"):
        ia = np.percentile(replicates(a, m, draw_counts(a.pools, reps=2000, seed=1)), [2.5, 97.5])
        ib = np.percentile(replicates(b, m, draw_counts(b.pools, reps=2000, seed=2)), [2.5, 97.5])
        assert ia[0] < ib[1] and ib[0] < ia[1], m  # the marginal intervals overlap


def test_independent_noise_is_not_separable_and_other_prompts_are_never_paired():
    rng = np.random.default_rng(2)
    rec_a, base = synthetic(rng)
    noisy = {**base, "util": base["util"] + rng.normal(0, 0.1, 24), "a": base["a"] + rng.normal(0, 0.5, 30)}
    rec_b, _ = synthetic(rng, base=noisy)
    a, b = table_of(rec_a), table_of(rec_b)
    got = compare(a, b, ["concept_auc", "util_sib"], counts=draw_counts(a.pools, reps=2000, seed=0))
    assert got["verdict"] == "not separable" and max(got["p_a"], got["p_b"]) < 0.95
    from analysis.paired_compare import _shared_pools
    from sage_core.evaluation.prompt_scores import PromptScores

    other = PromptScores()
    other.auc("concept_auc", "a", base["a"], base["benign"], pos_pool=("attack:a", [f"x{i}" for i in range(30)]),
              neg_pool=("benign", [f"n{i}" for i in range(40)]))
    assert _shared_pools([a, table_of(other)], ["concept_auc"]) is None


def test_deciding_pairs_by_hand():
    #  minimised points: front (0,3) (1,1) (3,0); dominated (1.2,1.1) near (1,1), (4,4) far
    pts = np.array([[1, 1], [4, 4], [0, 3], [3, 0], [1.2, 1.1]], dtype=float)
    front = np.array([True, False, True, True, False])
    pairs = deciding_pairs(pts, front)
    assert set(p for p in pairs if p[2] == "adjacent") == {(2, 0, "adjacent"), (0, 3, "adjacent")}
    assert set(p for p in pairs if p[2] == "neighbour") == {(0, 4, "neighbour"), (2, 1, "neighbour"),
                                                            (3, 1, "neighbour")}


def test_side_table_round_trip_and_hostile_files(tmp_path):
    rec, _ = synthetic(np.random.default_rng(3))
    path = write_prompt_scores(str(tmp_path), sweep_id="s", trial_id="t1", step=4, columns=rec.columns(),
                               pools=rec.pools)
    back = read_prompt_scores(str(tmp_path), sweep_id="s", trial_id="t1", step=4)
    for m in ("concept_auc", "util_sib"):
        assert objective_value(back, m) == objective_value(table_of(rec), m)
    assert read_prompt_scores(str(tmp_path), sweep_id="s", trial_id="t1", step=5) is None
    # an id no path may hold: writing refuses it, reading finds no scores (and builds no path)
    with pytest.raises(StorageError, match="trial_id '../x' is not allowed"):
        write_prompt_scores(str(tmp_path), sweep_id="s", trial_id="../x", step=4, columns=rec.columns(),
                            pools=rec.pools)
    assert read_prompt_scores(str(tmp_path), sweep_id="s", trial_id="../x", step=4) is None
    assert not (tmp_path / "x").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sweep_id=s"]
    # variant names make trial ids such as DES+LSA-0-0.3 (tests/test_analysis_ablation.py)
    write_prompt_scores(str(tmp_path), sweep_id="s", trial_id="DES+LSA-0-0.3", step=4, columns=rec.columns(),
                        pools=rec.pools)
    plus = read_prompt_scores(str(tmp_path), sweep_id="s", trial_id="DES+LSA-0-0.3", step=4)
    assert objective_value(plus, "util_sib") == objective_value(table_of(rec), "util_sib")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).replace_schema_metadata({}), path)
    with pytest.raises(StorageError, match="no valid sage_prompt_scores metadata"):
        read_prompt_scores(str(tmp_path), sweep_id="s", trial_id="t1", step=4)
    pq.write_table(pa.table({"metric": ["m"], "score": ["high"]}), path)
    with pytest.raises(StorageError, match="column 'part' is missing"):
        read_prompt_scores(str(tmp_path), sweep_id="s", trial_id="t1", step=4)


# --- the evaluator and the trial -------------------------------------------------------------------
def test_evaluator_scores_reproduce_every_recorded_metric(tiny_text_eval):
    from sage_core.evaluation.perturb import perturbed

    base, ev = tiny_text_eval
    out = ev(perturbed(base, kind="noise", size=0.3, reference_prompts=ev.geometry_prompts))
    t = table_of(ev.last_prompt_scores)
    assert {"concept_auc", "concept_auc_abs", "util_sib", "fidelity_abs"} <= set(t.metrics())
    for m in t.metrics():
        assert objective_value(t, m) == pytest.approx(out[m], abs=1e-12), m


def test_trial_writes_the_scores_its_row_reports(tiny_cfg, tmp_path):
    from sage_core.trainer import Trainer, TrainerCallback
    from sweeps.trial import TrialContext, TuneReportCallback

    class Keep(TrainerCallback):
        infos: list = []

        def on_evaluate(self, info):
            self.infos.append(info)

    keep = Keep()
    Trainer(tiny_cfg(max_steps=2, eval_every=2), out_dir=tmp_path / "run", callbacks=[keep], progress=False).fit()
    info = keep.infos[-1]
    cb = TuneReportCallback(context=TrialContext(sweep_id="sw", base={}, scores_root=str(tmp_path / "ps")),
                            trial_id="t0001")
    cb._write_prompt_scores(info)
    back = read_prompt_scores(str(tmp_path / "ps"), sweep_id="sw", trial_id="t0001", step=2)
    assert "attack_auc" not in back.metrics()  # diagnostics stay out of the side table (size)
    for m in ("matched_auc", "util_sib"):
        assert objective_value(back, m) == pytest.approx(info.metrics[m], abs=1e-12)


# --- sage pareto -----------------------------------------------------------------------------------
def test_pareto_marks_members_that_are_not_separable(tmp_path, capsys):
    rng = np.random.default_rng(4)
    rec0, base = synthetic(rng)
    variants = {"t0": rec0, "t1": synthetic(rng, auc_shift=0.3, util_shift=-0.05, base=base)[0],  # trade-off
                "t2": synthetic(rng, auc_shift=-0.3, util_shift=-0.05, base=base)[0],  # dominated by t0
                "t3": synthetic(rng, base={**base, "util": base["util"] + rng.normal(0, 0.002, 24)})[0]}
    rows = []
    for tid, rec in variants.items():
        t = table_of(rec)
        write_prompt_scores(str(tmp_path / "prompt_scores"), sweep_id="sw", trial_id=tid, step=10,
                            columns=rec.columns(), pools=rec.pools)
        rows.append({"sweep_id": "sw", "trial_id": tid, "step": 10, "fidelity": "text", "status": "finished",
                     "lambda_esp": float(tid[1]), **{m: objective_value(t, m) for m in ("concept_auc", "util_sib")}})
    ResultStore(tmp_path / "results").write(rows)
    from analysis.pareto import pareto_ranks
    from analysis.prompt_scores import scores_root_for

    ranked = pareto_ranks(str(tmp_path), x="concept_auc", y="util_sib")
    got = front_comparisons(ranked, ["concept_auc", "util_sib"], scores_root=scores_root_for(str(tmp_path / "results")))
    verdicts = {(r["A"].split("@")[0], r["B"].split("@")[0]): r["verdict"] for _, r in got.pairs.iterrows()}
    by_trial = {ranked.loc[i, "trial_id"]: v for i, v in got.separable.items()}
    # t3 is t0 with utility moved by noise far inside the prompts' spread: whichever of the two is on
    # the front is paired with the other, and they cannot be told apart
    twin = [t for t in ("t0", "t3") if t in by_trial]
    assert len(twin) == 1 and by_trial[twin[0]] == "no"
    assert "not separable" in {v for pair, v in verdicts.items() if set(pair) == {"t0", "t3"}}
    assert by_trial["t1"] == "yes" and "t2" not in by_trial
    assert any(v == "A dominates" for (a, b), v in verdicts.items() if b == "t2")
    with pytest.raises(SystemExit):
        main(["pareto", str(tmp_path), "--x", "concept_auc", "--y", "util_sib"])
    out = capsys.readouterr().out
    assert "separable" in out and "Pairs that decide the front" in out and "not separable" in out
    assert pd.notna(ranked["concept_auc"]).all()


# --- a real sweep ------------------------------------------------------------------------------------
def test_real_sweep_with_seeds_writes_scores_that_reproduce_its_rows(tmp_path, capsys):
    """Real Ray and DeepSpeed on the tiny CLIP: `seeds: 2` trains each grid point twice, every text
    evaluation leaves per-prompt scores that recompute the row's objectives, and `sage reliability`
    and `sage pareto` read the sweep folder."""
    import ray

    import sweeps
    from analysis.prompt_scores import scores_root_for
    from tests.test_sweep_run import tiny_spec

    spec = tiny_spec(tmp_path, train={"cache_dir": str(tmp_path / "cache")}, seeds=2,
                     space={"lambda_esp": {"grid": [0.0, 2.0]}},
                     objectives=[{"metric": "concept_auc"}, {"metric": "util_sib"}])
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        outcome = sweeps.run(str(spec), progress=False)
    finally:
        ray.shutdown()
    assert outcome.state == "finished" and outcome.counts["finished"] == 4
    rows = ResultStore(tmp_path / "sweep" / "results").read().to_pylist()
    assert sorted((r["lambda_esp"], r["seed"]) for r in rows if r["step"] == 4) == [(0.0, 0), (0.0, 1), (2.0, 0),
                                                                                      (2.0, 1)]
    root = scores_root_for(str(tmp_path / "sweep" / "results"))
    for r in rows:
        back = read_prompt_scores(root, sweep_id=r["sweep_id"], trial_id=r["trial_id"], step=r["step"])
        for m in ("concept_auc", "util_sib"):
            assert objective_value(back, m) == pytest.approx(r[m], abs=1e-12)
    with pytest.raises(SystemExit):
        main(["reliability", str(tmp_path / "sweep")])
    out = capsys.readouterr().out
    assert "concept_auc" in out and "tau@2" in out
    with pytest.raises(SystemExit):
        main(["pareto", str(tmp_path / "sweep"), "--x", "concept_auc", "--y", "util_sib"])
    assert "Pareto front" in capsys.readouterr().out
