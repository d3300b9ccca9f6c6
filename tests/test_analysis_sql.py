"""The DuckDB sandbox behind `sage sql`, pareto, ablation and report (real DuckDB, real Parquet)."""

from __future__ import annotations

import gc
from pathlib import Path

import duckdb
import pytest

import analysis
from analysis.sandbox import Limits, run_bounded
from analysis.sql import run_query
from analysis.store import ResultStore
from sage_core.defs.errors import QueryError


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rows = [{"sweep_id": "s1", "trial_id": f"t{i}", "step": 10, "fidelity": "text", "asr_text": i / 10,
             "util_text": 0.5 + i / 10, "matched_auc": 0.5 + i / 10, "util_sib": 0.4 + i / 10,
             "lambda_esp": float(i)} for i in range(5)]
    ResultStore(tmp_path / "results").write(rows)
    return tmp_path / "results"


def _setting(con: duckdb.DuckDBPyConnection, name: str):
    return con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0]


def test_connection_is_locked_down_with_its_limits(store: Path) -> None:
    con = analysis.connect(store, limits=Limits(memory="256MB", threads=1))
    try:
        assert _setting(con, "enable_external_access") is False
        assert _setting(con, "lock_configuration") is True
        assert _setting(con, "threads") == 1
        spill = Path(_setting(con, "temp_directory"))
        # DuckDB keeps only its own spill folder reachable; the store is not in the list.
        assert [Path(d) for d in _setting(con, "allowed_directories")] == [spill]
        assert _setting(con, "autoload_known_extensions") is False
        for statement in ("SET enable_external_access = true", "SET threads = 8", "RESET lock_configuration",
                          "SET allowed_directories = ['/']"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(statement)
        # the rows are there, loaded before the lock
        assert con.execute("SELECT count(*), sum(lambda_esp) FROM results").fetchall() == [(5, 10.0)]
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_parquet('{store}/*/*.parquet')").fetchall()
    finally:
        con.close()


def test_spill_folder_is_private_and_removed(store: Path) -> None:
    con = analysis.connect(store)
    spill = Path(_setting(con, "temp_directory"))
    assert spill.is_dir() and spill.name.startswith("sage-duckdb-")
    con.close()
    del con
    gc.collect()
    assert not spill.exists()


def test_a_query_spills_to_the_private_folder_under_a_small_memory_limit(store: Path) -> None:
    # a sort of ~200 MB of strings under a 64 MB limit: it only finishes by spilling
    result = run_query(store, "SELECT count(*) AS n, count(DISTINCT s) AS d FROM (SELECT md5(i::VARCHAR) || "
                       "md5((i + 1)::VARCHAR) AS s FROM range(2000000) t(i) ORDER BY s)",
                       limits=Limits(memory="64MB", threads=1))
    assert result.frame.to_dict("records") == [{"n": 2_000_000, "d": 2_000_000}]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"memory": "2 parsecs"}, "memory="), ({"memory": ""}, "memory="), ({"spill": "-1GB"}, "spill="),
    ({"threads": 0}, "threads=0"), ({"threads": True}, "threads=True"), ({"threads": 1000}, "threads=1000"),
    ({"timeout_s": 0}, "timeout=0"), ({"timeout_s": float("inf")}, "timeout=inf"), ({"timeout_s": -5}, "timeout=-5"),
])
def test_limits_are_validated(kwargs: dict, fragment: str) -> None:
    with pytest.raises(QueryError, match=fragment):
        Limits(**kwargs)


def test_run_bounded_interrupts_a_long_query_and_leaves_the_connection_usable(store: Path) -> None:
    con = analysis.connect(store)
    try:
        with pytest.raises(QueryError, match="timeout of 0.5 s"):
            run_bounded(con, lambda: con.sql("SELECT count(*) FROM range(1000000000) a, range(1000000000) b")
                        .fetchall(), timeout_s=0.5)
        assert run_bounded(con, lambda: con.sql("SELECT count(*) FROM results").fetchall(), timeout_s=30) == [(5,)]
    finally:
        con.close()


def test_limit_is_exact_and_reports_truncation(store: Path) -> None:
    full = run_query(store, "SELECT trial_id FROM results ORDER BY trial_id")
    assert list(full.frame["trial_id"]) == [f"t{i}" for i in range(5)] and not full.truncated
    cut = run_query(store, "SELECT trial_id FROM results ORDER BY trial_id", limit=2)
    assert list(cut.frame["trial_id"]) == ["t0", "t1"] and cut.truncated
    exact = run_query(store, "SELECT trial_id FROM results", limit=5)
    assert len(exact.frame) == 5 and not exact.truncated
    for bad in (0, -1, True, 10**9):
        with pytest.raises(QueryError, match="--limit"):
            run_query(store, "SELECT 1", limit=bad)


def test_pareto_and_report_read_through_the_sandbox(store: Path, tmp_path: Path) -> None:
    front = analysis.pareto_front(store, x="asr_text", y="util_text", fidelity="text")
    assert set(front["trial_id"]) == {f"t{i}" for i in range(5)}  # asr_text and util_text rise together: a trade-off, all on the front
    page = analysis.write_report(store, tmp_path / "report")
    assert page.is_file() and "t0" in page.read_text()


def test_mistyped_metric_column_is_a_bad_file(store: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = store / "sweep_id=s1" / "part-99999999999999999999-x.parquet"
    pq.write_table(pa.table({"trial_id": ["t9"], "step": pa.array([10], pa.int64()), "fidelity": ["text"],
                             "asr_text": ["0.5"]}), bad)
    with pytest.raises(analysis.StorageError, match=r"column 'asr_text' holds string"):
        analysis.connect(store)
    with pytest.raises(analysis.StorageError, match="part-99999999999999999999-x.parquet"):
        ResultStore(store).read()
    with pytest.warns(UserWarning):
        assert ResultStore(store).read(skip_bad=True).num_rows == 5
