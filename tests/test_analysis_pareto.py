"""Pareto fronts, ranks and hypervolume against brute-force references; the metric registry."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.errors import QueryError, UnknownNameError
from analysis.metrics import direction, sign
from analysis.pareto import hypervolume_2d


def brute_front(vals: np.ndarray, signs) -> np.ndarray:
    """O(n^2) definition: dominated iff another point is <= everywhere and < somewhere (minimised)."""
    a = vals * np.asarray(signs, float)
    n = len(a)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and np.all(a[j] <= a[i]) and np.any(a[j] < a[i]):
                keep[i] = False
                break
    return keep


def brute_ranks(vals: np.ndarray, signs) -> np.ndarray:
    ranks = np.zeros(len(vals), dtype=int)
    left = np.arange(len(vals))
    r = 1
    while len(left):
        mask = brute_front(vals[left], signs)
        ranks[left[mask]] = r
        left = left[~mask]
        r += 1
    return ranks


def brute_hv(a: np.ndarray, ref: np.ndarray) -> float:
    """Union volume of the boxes [a_i, ref] by summing grid cells (minimisation form)."""
    a = a[np.all(a < ref, axis=1)]
    if len(a) == 0:
        return 0.0
    axes = [np.unique(np.concatenate([a[:, d], [ref[d]]])) for d in range(a.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(ax) - 1) for ax in axes]):
        lo = np.array([axes[d][c] for d, c in enumerate(cell)])
        hi = np.array([axes[d][c + 1] for d, c in enumerate(cell)])
        if np.any(np.all(a <= lo, axis=1)):
            total += float(np.prod(hi - lo))
    return total


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
    assert hypervolume_2d(np.array([[2.0, 2.0]]), np.array([1.0, 1.0])) == 0.0  # worse than ref
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
