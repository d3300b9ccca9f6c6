"""Pareto fronts, ranks and hypervolume against brute-force references (tests/pareto_oracle.py);
the SQL front against the numpy one; outputs pinned before the one-implementation refactor; the
metric registry."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

import analysis
from sage_core.defs.errors import QueryError, UnknownNameError
from analysis import dominance
from sage_core.defs.metrics import direction, sign
from tests.pareto_oracle import brute_front, brute_hv, brute_ranks


def _frame(rng: np.random.Generator, n: int, *, k: int = 2, grid: int | None = None, nan_frac: float = 0.0):
    vals = rng.integers(0, grid, size=(n, k)).astype(float) / grid if grid else rng.random((n, k))
    if nan_frac and n:
        vals[rng.random((n, k)) < nan_frac] = np.nan
    df = pd.DataFrame(vals, columns=["asr", "tifa", "fid"][:k])
    df["trial_id"] = [f"t{i:04d}" for i in range(n)]
    df["grp"] = rng.integers(0, 3, size=n) if n else []
    return df


def _front_ids(con: duckdb.DuckDBPyConnection, **kw) -> set[str]:
    return set(analysis.pareto_front(con, table="pts", steps="all", **kw)["trial_id"])


@pytest.mark.parametrize("seed", range(12))
def test_front_matches_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    grid = [None, 4, 7][seed % 3]  # coarse grids make ties and exact duplicates
    df = _frame(rng, n, grid=grid, nan_frac=0.1 if seed % 2 else 0.0)
    con = duckdb.connect()
    con.register("pts", df)
    ok = df.dropna(subset=["asr", "tifa"])
    expected = set(ok["trial_id"][brute_front(ok[["asr", "tifa"]].to_numpy(), [1, -1])])
    assert _front_ids(con, x="asr", y="tifa") == expected
    # per group
    got = analysis.pareto_front(con, table="pts", steps="all", by="grp")
    for g, part in ok.groupby("grp"):
        exp = set(part["trial_id"][brute_front(part[["asr", "tifa"]].to_numpy(), [1, -1])])
        assert set(got.loc[got["grp"] == g, "trial_id"]) == exp
    # hypervolume of all points equals the brute-force union area
    ref = np.array([1.1, -0.1])  # asr <= 1.1 (min), tifa >= -0.1 (max)
    hv = analysis.hypervolume(df, x="asr", y="tifa", ref=ref)
    pts = ok[["asr", "tifa"]].to_numpy() * np.array([1, -1])
    assert hv == pytest.approx(brute_hv(pts, ref * np.array([1, -1])), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_three_objectives_and_ranks_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    df = _frame(rng, 30, k=3, grid=5)
    con = duckdb.connect()
    con.register("pts", df)
    vals = df[["asr", "tifa", "fid"]].to_numpy()
    expected = set(df["trial_id"][brute_front(vals, [1, -1, 1])])
    assert _front_ids(con, x="asr", y="tifa", extra="fid") == expected
    ranks = analysis.pareto_ranks(con, table="pts", steps="all", x="asr", y="tifa")
    want = dict(zip(df["trial_id"], brute_ranks(df[["asr", "tifa"]].to_numpy(), [1, -1])))
    assert dict(zip(ranks["trial_id"], ranks["front"])) == want
    ref = np.array([1.0, 0.0, 1.0])
    hv = analysis.hypervolume(df, x="asr", y="tifa", extra="fid", ref=ref)
    assert hv == pytest.approx(brute_hv(vals * np.array([1, -1, 1]), ref * np.array([1, -1, 1])))


def test_hypervolume_pinned_values_and_edge_cases() -> None:
    # minimise asr, maximise tifa; ref (1, 0): boxes [0.2,1]x[0,0.5] u [0.5,1]x[0,0.9]
    pts = np.array([[0.2, 0.5], [0.5, 0.9], [0.6, 0.4]])
    assert analysis.hypervolume(pts, x="asr", y="tifa", ref=(1.0, 0.0)) == pytest.approx(0.8 * 0.5 + 0.5 * 0.4)
    assert analysis.hypervolume(np.array([[0.2, 0.5]]), x="asr", y="tifa") == 0.0  # nadir ref: one point is 0
    assert analysis.hypervolume(np.zeros((0, 2)), x="asr", y="tifa") == 0.0
    assert analysis.hypervolume(np.array([[np.nan, 0.5]]), x="asr", y="tifa", ref=(1, 0)) == 0.0
    assert dominance.hypervolume(np.array([[2.0, 2.0]]), [1.0, 1.0]) == 0.0  # worse than ref
    with pytest.raises(QueryError, match="ref"):
        analysis.hypervolume(pts, x="asr", y="tifa", ref=(1.0,))
    with pytest.raises(QueryError, match=r"shape"):
        analysis.hypervolume(np.zeros((3, 3)), x="asr", y="tifa")


def test_single_point_and_empty_fronts() -> None:
    con = duckdb.connect()
    con.register("pts", pd.DataFrame({"asr": [0.3], "tifa": [0.7], "trial_id": ["t0"]}))
    assert _front_ids(con) == {"t0"}
    con.register("pts", pd.DataFrame({"asr": pd.Series([], dtype=float), "tifa": pd.Series([], dtype=float),
                                      "trial_id": pd.Series([], dtype=str)}))
    assert analysis.pareto_front(con, table="pts", steps="all").empty


def test_metric_directions_and_did_you_mean() -> None:
    assert direction("asr") == direction("asr_ringabell") == direction("asr_text_sneaky") == "minimize"
    assert direction("tifa_color") == direction("util_text_spatial") == direction("jaccard_10") == "maximize"
    assert direction("tifa_drop") == direction("fid") == direction("distortion_rel") == "minimize"
    assert sign("spread_dev") == 1 and sign("loss_esp") == 1 and sign("util_sib") == -1
    with pytest.raises(UnknownNameError, match="did you mean 'tifa'"):
        direction("tifaa")
    con = duckdb.connect()
    con.register("pts", pd.DataFrame({"asr": [0.3], "tifa": [0.7]}))
    with pytest.raises(UnknownNameError, match="did you mean 'asr'"):
        analysis.pareto_front(con, table="pts", x="asr_text", y="tifa")


def test_front_hypervolume_against_the_trials_nadir() -> None:
    """Two front points and two dominated trials: the reference is the worst value over all four,
    so the front's area is the union of its two boxes (by hand: 0.07*0.10 + 0.02*0.10)."""
    from analysis.pareto import nadir

    trials = pd.DataFrame({"concept_auc": [0.90, 0.95, 0.97, 0.93], "util_sib": [0.60, 0.70, 0.50, 0.55]})
    ref = nadir(trials, x="concept_auc", y="util_sib")
    assert ref == [0.97, 0.50]
    front = trials.iloc[:2]
    expected = (0.97 - 0.90) * (0.60 - 0.50) + (0.97 - 0.95) * (0.70 - 0.60)
    assert analysis.hypervolume(front, x="concept_auc", y="util_sib", ref=ref) == pytest.approx(expected)
    assert analysis.hypervolume(front, x="concept_auc", y="util_sib") == 0.0  # its own nadir: no area


@pytest.mark.parametrize("seed", range(10))
def test_sql_front_agrees_with_the_numpy_ranks(seed: int) -> None:
    """The two-objective SQL front (kept for very large stores) selects exactly the rows that
    analysis.dominance puts in front 1, per group too, on data with ties, duplicates and NaN."""
    rng = np.random.default_rng(500 + seed)
    n = int(rng.integers(1, 400))
    df = _frame(rng, n, grid=[3, 5, 11, None][seed % 4], nan_frac=0.05)
    df = pd.concat([df, df.sample(n=n // 4, random_state=seed)], ignore_index=True)  # exact duplicates
    df["trial_id"] = [f"r{i:04d}" for i in range(len(df))]
    con = duckdb.connect()
    con.register("pts", df)
    for by in (None, "grp"):
        sql = analysis.pareto_front(con, table="pts", steps="all", by=by)
        ranked = analysis.pareto_ranks(con, table="pts", steps="all", by=by)
        assert sorted(sql["trial_id"]) == sorted(ranked.loc[ranked["front"] == 1, "trial_id"])
    ok = df.dropna(subset=["asr", "tifa"])
    assert set(sql["trial_id"]) == set().union(*(
        set(part["trial_id"][brute_front(part[["asr", "tifa"]].to_numpy(), [1, -1])]) for _, part in ok.groupby("grp")))


# Recorded from the code before the one-implementation refactor (SQL front, moocore ranks and
# hypervolume): 80 rows on a 7-level grid, 3 groups; ranks per group, as one character per row
# (front 10 = "A", 11 = "B").
PINNED_ANALYSIS = {
    21: ("2347424A258517637414726987456313245599464422481A54225637155751639635636855213A58", ["t056"],
         0.8571428571428571, 0.7346938775510203),
    22: ("51152423423155424235621642231614322425545314332134365335211472421411322441536121",
         ["t042", "t067", "t066", "t079", "t001"], 0.8104956268221575, 0.5830903790087463),
    23: ("246924852586756325315455172A43231175564846284215B45414265743137385836A2724367295", ["t024", "t033"],
         0.8571428571428571, 0.7346938775510203),
}


def _pinned_frame(seed: int, k: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.integers(0, 7, size=(80, k)) / 7, columns=["asr", "tifa", "fid"][:k])
    df["trial_id"] = [f"t{i:03d}" for i in range(80)]
    df["grp"] = rng.integers(0, 3, size=80)
    return df


@pytest.mark.numerics
@pytest.mark.parametrize("seed", sorted(PINNED_ANALYSIS))
def test_fronts_ranks_and_hypervolumes_stay_as_recorded(seed: int) -> None:
    k = 3 if seed == 22 else 2
    extra = "fid" if k == 3 else None
    ranks_pin, front_pin, hv_pin, hv_nadir_pin = PINNED_ANALYSIS[seed]
    df = _pinned_frame(seed, k)
    con = duckdb.connect()
    con.register("pts", df)
    ranked = analysis.pareto_ranks(con, table="pts", steps="all", extra=extra, by="grp")
    got = dict(zip(ranked["trial_id"], ranked["front"]))
    assert "".join("0123456789AB"[got[t]] for t in df["trial_id"]) == ranks_pin
    objs, signs = ["asr", "tifa", "fid"][:k], [1, -1, 1][:k]
    for g, part in df.groupby("grp"):  # independent check of the pin
        assert [got[t] for t in part["trial_id"]] == brute_ranks(part[objs].to_numpy(), signs).tolist()
    key = ranked[["grp", "front", "asr", "tifa"]].to_records(index=False).tolist()
    assert key == sorted(key)  # sorted by group, front, then the objectives
    front = analysis.pareto_front(con, table="pts", steps="all", extra=extra)
    assert list(front["trial_id"]) == front_pin
    assert set(front_pin) == set(df["trial_id"][brute_front(df[objs].to_numpy(), signs)])
    ref = [1.0, 0.0, 1.0][:k]
    hv = analysis.hypervolume(front, extra=extra, ref=ref)
    assert hv == pytest.approx(hv_pin, rel=1e-12)
    assert hv == pytest.approx(brute_hv(front[objs].to_numpy() * signs, np.asarray(ref) * signs), rel=1e-12)
    nadir = analysis.pareto.nadir(ranked, x="asr", y="tifa", extra=extra)
    assert analysis.hypervolume(front, extra=extra, ref=nadir) == pytest.approx(hv_nadir_pin, rel=1e-12)
