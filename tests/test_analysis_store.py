"""Results store: one conformance suite over two filesystems, crashes, concurrency, bad files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import analysis
from analysis.store import KEY_COLUMNS, ResultStore
from sage_core.defs.errors import StorageError


def _row(trial: str, step: int, fidelity: str = "text", sweep: str = "sw-1", **metrics):
    return {"sweep_id": sweep, "trial_id": trial, "step": step, "fidelity": fidelity, "method": "sage",
            "status": metrics.pop("status", "running"), "lambda_esp": 2.0, "local_k": 15, **metrics}


@pytest.fixture(params=["local", "file-uri", "fsspec-memory", "subtree"])
def store(request, tmp_path: Path) -> ResultStore:
    """The same store contract on a local folder, fsspec's in-memory filesystem (through
    pyarrow's FSSpecHandler, by URI), and an explicit pyarrow SubTreeFileSystem."""
    if request.param == "local":
        return ResultStore(tmp_path / "results")
    if request.param == "file-uri":
        return ResultStore(tmp_path.as_uri() + "/results")
    if request.param == "fsspec-memory":
        return ResultStore(f"memory://analysis-test-{uuid.uuid4().hex}/results")
    sub = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    return ResultStore("results", filesystem=sub)


def test_write_read_roundtrip_and_key_dedup(store: ResultStore) -> None:
    assert store.write([_row("t0", 10, asr_text=0.5), _row("t1", 10, asr_text=0.4)]) == 2
    assert store.write([_row("t0", 10, asr_text=0.1)]) == 1  # retried write of a key: replaces
    assert store.write([_row("t0", 20, asr_text=0.3), _row("t0", 20, asr_text=0.2)]) == 1  # same call: last wins
    table = store.read()
    assert table.column_names[:4] == list(KEY_COLUMNS)
    rows = {(r["trial_id"], r["step"]): r["asr_text"] for r in table.to_pylist()}
    assert rows == {("t0", 10): 0.1, ("t1", 10): 0.4, ("t0", 20): 0.2}
    assert len(store.files()) == 3  # one atomic file per write call
    con = analysis.connect(store)
    assert con.sql("SELECT count(*), count(DISTINCT (trial_id, step)) FROM results").fetchall() == [(3, 3)]
    assert con.sql("SELECT asr_text FROM results WHERE trial_id='t0' AND step=10").fetchall() == [(0.1,)]


def test_schema_evolution_and_int_float_mix(store: ResultStore) -> None:
    store.write([_row("t0", 10, asr_text=0.5, lambda_lsa=0)])  # int here ...
    store.write([_row("t1", 10, asr_text=0.4, lambda_lsa=0.1, tifa_color=0.8, fidelity="image")])  # float there
    store.write([{**_row("t2", 10), "new_metric_loss": 3}])
    con = analysis.connect(store)
    types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE results)").fetchall())
    assert types["lambda_lsa"] == "DOUBLE" and types["step"] == "BIGINT" and types["sweep_id"] == "VARCHAR"
    got = con.sql("SELECT trial_id, lambda_lsa, tifa_color FROM results ORDER BY trial_id").fetchall()
    assert got == [("t0", 0.0, None), ("t1", 0.1, 0.8), ("t2", None, None)]
    assert store.read().column("new_metric_loss").to_pylist() == [None, None, 3.0]


def test_numeric_sweep_ids_stay_text(store: ResultStore) -> None:
    store.write([_row("t0", 1, sweep="0042", asr_text=0.5), _row("t0", 1, sweep="abc", asr_text=0.4)])
    con = analysis.connect(store)
    assert con.sql("SELECT sweep_id FROM results ORDER BY 1").fetchall() == [("0042",), ("abc",)]


def test_compact_merges_files_and_keeps_newest(store: ResultStore) -> None:
    for i in range(5):
        store.write([_row("t0", 10, asr_text=i / 10), _row(f"t{i + 1}", 10, asr_text=0.9)])
    store.write([_row("x", 1, sweep="other")])
    before = store.read().to_pylist()
    assert store.compact("sw-1") == 5
    assert len(store.files("sw-1")) == 1 and len(store.files("other")) == 1
    assert store.read().to_pylist() == before
    store.write([_row("t0", 10, asr_text=0.99)])  # a write after compaction still wins
    assert [r["asr_text"] for r in store.read().to_pylist() if r["trial_id"] == "t0"] == [0.99]


def test_bad_rows_are_refused_with_the_field_named(store: ResultStore) -> None:
    with pytest.raises(StorageError, match=r"row 1: fidelity 'video' is not allowed \(allowed: text, image\)"):
        store.write([_row("t0", 1), _row("t1", 1, fidelity="video")])
    with pytest.raises(StorageError, match=r"status 'done' is not allowed \(allowed: running, finished, pruned, failed\)"):
        store.write([{**_row("t0", 1), "status": "done"}])
    with pytest.raises(StorageError, match="missing key column"):
        store.write([{"sweep_id": "s", "trial_id": "t", "step": 1}])
    with pytest.raises(StorageError, match="sweep_id 'a/b' is not allowed"):
        store.write([_row("t0", 1, sweep="a/b")])
    with pytest.raises(StorageError, match="column 'asr_text': mixes text and numbers"):
        store.write([_row("t0", 1, asr_text=0.1), _row("t1", 1, asr_text="high")])
    with pytest.raises(StorageError, match="'local_k': value 2.5 is not a whole number"):
        store.write([{**_row("t0", 1), "local_k": 2.5}])
    assert store.files() == []  # nothing half-written


def test_corrupt_and_foreign_files_are_named_and_skipped_only_when_asked(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = ResultStore(tmp_path / "results")
    store.write([_row("t0", 10, asr_text=0.5)])
    part = tmp_path / "results" / "sweep_id=sw-1"
    (part / "part-zz-corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.table({"x": [1, 2]}), part / "part-zz-foreign.parquet")
    for call in (store.read, lambda: analysis.connect(store)):
        with pytest.raises(StorageError) as err:
            call()
        assert "part-zz-corrupt.parquet" in str(err.value) and "part-zz-foreign.parquet" in str(err.value)
        assert "skip_bad=True" in str(err.value)
    with pytest.warns(UserWarning, match="part-zz-corrupt.parquet"):
        assert store.read(skip_bad=True).num_rows == 1
    assert {Path(b.path).name for b in store.skipped} == {"part-zz-corrupt.parquet", "part-zz-foreign.parquet"}
    with pytest.warns(UserWarning, match="part-zz-foreign.parquet"):
        con = analysis.connect(store, skip_bad=True)
    assert con.sql("SELECT count(*) FROM results").fetchall() == [(1,)]


_CRASH = textwrap.dedent(
    """
    import os, sys
    import analysis.store as st
    def crash(fs, tmp, final):
        os._exit(17)  # the process dies between writing the temporary file and renaming it
    st._publish = crash
    st.ResultStore(sys.argv[1]).write([{"sweep_id": "sw-1", "trial_id": "t9", "step": 1,
                                        "fidelity": "text", "asr_text": 0.7}])
    """
)


def test_writer_killed_between_write_and_rename_leaves_no_partial_rows(tmp_path: Path) -> None:
    root = tmp_path / "results"
    store = ResultStore(root)
    store.write([_row("t0", 10, asr_text=0.5)])
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    leftovers = list((root / "sweep_id=sw-1").glob("_tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the orphan exists ...
    assert [r["trial_id"] for r in store.read().to_pylist()] == ["t0"]  # ... and is invisible
    assert analysis.connect(root).sql("SELECT trial_id FROM results").fetchall() == [("t0",)]
    assert store.compact(stale_tmp_s=0) == 1 and not list((root / "sweep_id=sw-1").glob("_tmp-*"))


def test_concurrent_reader_never_sees_partial_files(tmp_path: Path) -> None:
    root = tmp_path / "results"
    store = ResultStore(root)
    store.write([_row("seed", 0, batch=-1)] * 1)
    batches, size = 40, 6
    errors: list[BaseException] = []
    done, reading = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            reading.wait(timeout=60)
            for b in range(batches):
                store.write([_row(f"b{b}-{i}", 1, batch=b, asr_text=0.1) for i in range(size)])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    rounds = 0
    while True:
        finished = done.is_set()  # read before connecting: the last round sees every file
        con = analysis.connect(root)  # a snapshot of the files present now
        counts = con.sql("SELECT batch, count(*) FROM results WHERE batch >= 0 GROUP BY batch").fetchall()
        con.close()
        assert all(n == size for _, n in counts), counts  # whole files or nothing
        via_arrow = store.read().column("batch").to_pylist()
        assert all(via_arrow.count(b) == size for b in set(via_arrow) if b >= 0)
        rounds += 1
        reading.set()
        if finished:
            break
    thread.join()
    assert not errors
    assert len(counts) == batches and rounds > 1


def test_int_file_beside_float_file_reads_as_double(store: ResultStore) -> None:
    """A file from another writer with an int64 metric column still reads with our float64 files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store.write([_row("t0", 1, asr_text=0.5)])
    raw = pa.table({"trial_id": ["t1"], "step": pa.array([1], pa.int64()), "fidelity": ["text"],
                    "asr_text": pa.array([1], pa.int64())})
    pq.write_table(raw, f"{store.path}/sweep_id=sw-1/part-00000000000000000001-raw.parquet",
                   filesystem=store.filesystem)
    assert sorted(store.read().column("asr_text").to_pylist()) == [0.5, 1.0]
    con = analysis.connect(store)
    assert con.sql("SELECT sum(asr_text) FROM results").fetchall() == [(1.5,)]


def test_all_missing_column_then_text_reads_on_both_paths(store: ResultStore) -> None:
    """A column that is missing (None) in one write and text in a later one, as `error` is."""
    store.write([{**_row("t0", 1), "error": None, "max_pairs": None}])
    store.write([{**_row("t1", 1, status="failed"), "error": "ValueError: boom", "max_pairs": 64}])
    assert store.read().column("error").to_pylist() == [None, "ValueError: boom"]
    con = analysis.connect(store)
    assert con.sql("SELECT trial_id, error, max_pairs FROM results ORDER BY 1").fetchall() == [
        ("t0", None, None), ("t1", "ValueError: boom", 64.0)]
    with pytest.raises(StorageError, match="differ only in case"):
        store.write([{**_row("t2", 1), "Loss": 1.0, "loss": 2.0}])
