"""analysis.dominance (the one Pareto implementation) and analysis.rows (newest write per key,
last row per trial) against independent brute-force computations on seeded data."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from analysis import dominance
from analysis.rows import last_rows, last_step_sql, newest_write_sql, trial_status_sql
from sage_core.defs.errors import QueryError, UnknownNameError
from tests.pareto_oracle import brute_hv, brute_rank_crowding, brute_ranks


def _points(rng: np.random.Generator, *, n: int, k: int, grid: int | None, inf_frac: float = 0.0) -> np.ndarray:
    pts = rng.integers(0, grid, size=(n, k)) / grid if grid else rng.random((n, k))
    pts = np.concatenate([pts, pts[rng.integers(0, n, size=n // 5)]]) if n else pts  # exact duplicates
    pts[rng.random(pts.shape) < inf_frac] = math.inf
    return pts


@pytest.mark.parametrize("seed", range(12))
def test_ranks_and_crowding_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = [2, 3, 4, 1][seed % 4]
    pts = _points(rng, n=int(rng.integers(0, 70)), k=k, grid=[3, 6, None][seed % 3], inf_frac=0.05 * (seed % 2))
    ranks, crowd = dominance.ranks_and_crowding(pts)
    want_ranks, want_crowd = brute_rank_crowding(pts)
    assert ranks.tolist() == want_ranks.tolist()
    assert dominance.nondominated_ranks(pts).tolist() == want_ranks.tolist()
    assert dominance.front_mask(pts).tolist() == (want_ranks == 0).tolist()
    assert crowd.tolist() == pytest.approx(want_crowd, rel=1e-12)


def test_ranks_pinned_and_negative_zero_equals_zero() -> None:
    pts = np.array([[0.1, -0.9], [0.2, -0.95], [0.05, -0.8], [0.5, -0.5], [0.6, -0.4], [0.3, -0.3]])
    assert dominance.nondominated_ranks(pts).tolist() == [0, 0, 0, 1, 2, 1]
    # tifa 0.0 maximised is -0.0: a duplicate of a 0.0, not a different point
    signs = dominance.objective_signs(["asr", "tifa"])
    same = dominance.minimised([[0.5, 0.0], [0.5, -0.0]], signs)
    assert dominance.nondominated_ranks(same).tolist() == [0, 0]
    assert dominance.crowding_distance(np.array([[0.0, 1.0], [0.25, 0.5], [1.0, 0.0]])).tolist() == [math.inf, 2.0,
                                                                                                     math.inf]


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 2), (2, 3), (3, 3)])
def test_hypervolume_matches_the_union_of_boxes(seed: int, k: int) -> None:
    rng = np.random.default_rng(40 + seed)
    pts = _points(rng, n=25, k=k, grid=[5, None][seed % 2])
    ref = np.full(k, 0.9)  # some points are not strictly better than ref: they add nothing
    assert dominance.hypervolume(pts, ref) == pytest.approx(brute_hv(pts, ref), rel=1e-12, abs=1e-15)
    assert dominance.hypervolume(np.zeros((0, k)), ref) == 0.0


def test_bad_points_modes_and_refs_are_refused() -> None:
    with pytest.raises(QueryError, match="NaN is not allowed"):
        dominance.nondominated_ranks(np.array([[0.1, np.nan]]))
    with pytest.raises(QueryError, match=r"shape \[n, k\]"):
        dominance.nondominated_ranks(np.array([0.1, 0.2]))
    with pytest.raises(QueryError, match="ref: expected 2 numbers"):
        dominance.hypervolume(np.array([[0.1, 0.2]]), [1.0])
    assert dominance.objective_signs(["asr", "tifa", "fid"]).tolist() == [1, -1, 1]  # from the registry
    assert dominance.objective_signs(["custom", "tifa"], ["max", "max"]).tolist() == [-1, -1]
    with pytest.raises(QueryError, match="mode 'up' of objective 'asr' is not allowed"):
        dominance.objective_signs(["asr"], ["up"])
    with pytest.raises(UnknownNameError, match="did you mean 'tifa'"):
        dominance.objective_signs(["tifaa"])


# -- analysis.rows ---------------------------------------------------------------------------------
def _store_rows(seed: int) -> list[dict]:
    """Rows with unique keys (as the store holds them): 2 sweeps x 8 trials, text at several steps,
    image at one, shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for sweep in ("s1", "s2"):
        for t in range(8):
            for step in sorted(set(rng.integers(1, 50, size=int(rng.integers(1, 5))).tolist())):
                rows.append({"sweep_id": sweep, "trial_id": f"t{t}", "step": step, "fidelity": "text",
                             "value": float(rng.random())})
            if rng.random() < 0.5:
                rows.append({"sweep_id": sweep, "trial_id": f"t{t}", "step": int(rng.integers(1, 50)),
                             "fidelity": "image", "value": float(rng.random())})
    return [rows[i] for i in rng.permutation(len(rows))]


@pytest.mark.parametrize("seed", range(4))
def test_last_row_per_trial_python_and_sql_agree(seed: int) -> None:
    rows = _store_rows(seed)
    want = {}
    for key in {(r["sweep_id"], r["trial_id"], r["fidelity"]) for r in rows}:
        mine = [r for r in rows if (r["sweep_id"], r["trial_id"], r["fidelity"]) == key]
        want[key] = max(mine, key=lambda r: r["step"])
    assert last_rows(rows) == want
    assert last_rows(rows, fidelity="image") == {k: v for k, v in want.items() if k[2] == "image"}
    con = duckdb.connect()
    con.register("t", pd.DataFrame(rows))
    got = con.sql(last_step_sql("SELECT * FROM t", columns=["sweep_id", "trial_id", "step", "fidelity", "value"]))
    assert sorted(got.fetchall()) == sorted(tuple(r.values()) for r in want.values())
    assert last_step_sql("SELECT 1 AS x", columns=["x"]) == "SELECT 1 AS x"  # nothing to narrow


def test_newest_write_wins_per_key() -> None:
    rng = np.random.default_rng(7)
    rows = [{"sweep_id": "s", "trial_id": f"t{rng.integers(0, 4)}", "step": int(rng.integers(0, 3)),
             "fidelity": "text", "_file": f"part-{i:04d}", "value": float(i)} for i in rng.permutation(60)]
    keys = ["sweep_id", "trial_id", "step", "fidelity"]
    want = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        if k not in want or r["_file"] > want[k]["_file"]:
            want[k] = r
    con = duckdb.connect()
    con.register("rows", pd.DataFrame(rows))
    got = con.sql(newest_write_sql("rows", keys=keys)).df()
    assert list(got.columns) == [*keys, "value"]
    assert sorted(got.itertuples(index=False, name=None)) == sorted(
        (*k, r["value"]) for k, r in want.items())


def test_trial_status_is_the_status_of_the_largest_step() -> None:
    rng = np.random.default_rng(3)
    statuses = ["running", "pruned", "finished"]
    rows = [{"sweep_id": f"s{s}", "trial_id": f"t{t}", "step": int(step), "status": str(rng.choice(statuses))}
            for s in range(2) for t in range(6) for step in rng.choice(40, size=int(rng.integers(1, 5)), replace=False)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    want = {}
    for r in rows:
        k = (r["sweep_id"], r["trial_id"])
        if k not in want or r["step"] > want[k][0]:
            want[k] = (r["step"], r["status"])
    con = duckdb.connect()
    con.register("t", pd.DataFrame(rows))
    got = {(s, t): status for s, t, status in con.sql(trial_status_sql("t")).fetchall()}
    assert got == {k: v[1] for k, v in want.items()}
