"""`sage sweep stop` (graceful, resumable) and the driver's multi-node storage check (real Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep_faults import _rows
from tests.test_sweep_run import tiny_spec

ROOT = Path(__file__).resolve().parents[1]

#: The driver: a sweep that runs `sage sweep stop` on its own folder while Tune's loop hands the
#: store its first result (a known point, not a time), leaving the command's exit code and output.
#: The stop callback looks at the stop file at every loop step, so the sweep stops before the next
#: trial's results: the stop lands mid-sweep however fast the machine is.
DRIVER = """
import json, sys
from typer.testing import CliRunner
import sweeps
from sweeps.cli import app
from sweeps.store_callback import StoreCallback

spec, storage, note = sys.argv[1], sys.argv[2], sys.argv[3]
on_result, asked = StoreCallback.on_trial_result, []

def result_then_stop(self, *args, **kwargs):
    on_result(self, *args, **kwargs)
    if not asked:
        asked.append(True)
        result = CliRunner().invoke(app, ["sweep", "stop", storage])
        with open(note, "w") as fh:
            json.dump({"code": result.exit_code, "output": result.output}, fh)

StoreCallback.on_trial_result = result_then_stop
outcome = sweeps.run(spec, progress=False)
print(outcome.summary())
sys.exit(0 if outcome.state == "finished" else 1)
"""


def _sage(argv: list[str], capsys) -> tuple[int, str, str]:
    """``sage ARGV`` in this process, through the CLI entry point that turns errors into one line."""
    from sweeps.cli import main

    capsys.readouterr()  # drop what came before (model building, Ray start-up)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _meta(storage: Path) -> dict:
    return json.loads((storage / "sweep.json").read_text())


def _run_a_driver_that_stops_itself(tmp_path: Path, spec: Path, storage: Path) -> tuple[int, str, dict]:
    """DRIVER on ``spec`` in its own process: its exit code, its output, and what `sage sweep stop` said."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log, note = tmp_path / "driver.log", tmp_path / "stop-note.json"
    with log.open("w") as fh:  # a file, not a pipe: a full pipe would block the driver
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec), str(storage), str(note)], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(30)
    return proc.returncode, log.read_text(), json.loads(note.read_text())


def _check_stopped_mid_sweep(storage: Path, code: int, out: str, stop: dict, *, n_trials: int,
                             steps: tuple[int, ...]) -> list[dict]:
    """The stop was accepted, the run exited 1 as stopped (resumable, nothing pruned) and said how
    to resume, mid-sweep; returns the rows written before the stop."""
    assert stop["code"] == 0, stop["output"]
    assert "stop requested" in stop["output"] and f"sage sweep resume {storage}" in stop["output"]
    # `sage sweep run` exits 1 whenever the sweep did not finish, and prints how to go on.
    assert code == 1, out[-3000:]
    meta = _meta(storage)
    # the trial the stop interrupted is unfinished (resumable), not pruned: the scheduler stopped nothing
    assert meta["state"] == "stopped" and meta["counts"]["finished"] < n_trials, meta
    assert meta["counts"]["pruned"] == 0 and meta["counts"]["unfinished"] + meta["counts"]["finished"] >= 1, meta
    assert f"sweep {meta['sweep_id']} stopped" in out, out[-3000:]
    assert f"resume with: sage sweep resume {storage}" in out, out[-3000:]
    assert not (storage / "STOP").exists()
    before = _rows(storage)
    assert 1 <= len(before) < n_trials * len(steps), "the stop landed mid-sweep"
    return before


def _check_resume_loses_or_duplicates_no_row(storage: Path, before: list[dict], capsys, *, n_trials: int,
                                             steps: tuple[int, ...]) -> str:
    """`sage sweep resume` finishes every trial with one row per evaluation, and the rows written
    before the stop stay as they were; returns the sweep id."""
    code, out, err = _sage(["sweep", "resume", str(storage)], capsys)
    assert code == 0, out + err
    meta = _meta(storage)
    assert f"sweep {meta['sweep_id']} finished: {n_trials} finished" in out
    assert meta["state"] == "finished" and meta["counts"]["finished"] == n_trials, meta
    assert not (storage / "STOP").exists()
    rows = _rows(storage)
    keys = [(r["trial_id"], r["step"], r["fidelity"]) for r in rows]
    trials = {r["trial_id"] for r in rows}
    assert len(trials) == n_trials
    assert sorted(keys) == sorted((t, s, "text") for t in trials for s in steps)  # no row lost or duplicated
    assert {r["sweep_id"] for r in rows} == {meta["sweep_id"]}
    assert {(r["lambda_esp"], r["step"]): r["status"] for r in rows} == {
        (e, s): ("finished" if s == steps[-1] else "running") for e in (0.0, 1.0, 2.0, 3.0) for s in steps}
    # rows written before the stop are kept as they were (same checkpoints, same metrics)
    after = {(r["trial_id"], r["step"]): r for r in rows}
    for r in before:
        assert after[(r["trial_id"], r["step"])]["asr_text"] == pytest.approx(r["asr_text"], abs=1e-4)
    return meta["sweep_id"]


def _check_stop_refuses(folder: Path, capsys, *expected: str) -> None:
    """`sage sweep stop FOLDER` is refused: one line on stderr naming ``expected``, exit 2, no STOP file."""
    code, out, err = _sage(["sweep", "stop", str(folder)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert all(e in err for e in expected), err
    assert not (folder / "STOP").exists()


@pytest.mark.slow
def test_stop_is_graceful_resumable_and_loses_or_duplicates_no_row(tmp_path, capsys):
    storage = tmp_path / "sweep"
    # 4 grid points, one trial at a time, 32 steps with text metrics every 16: 4 trials x 2 evaluations;
    # the stop is asked at the first of those 8 results and lands before the next trial's.
    spec = tiny_spec(tmp_path, space={"lambda_esp": {"grid": [0.0, 1.0, 2.0, 3.0]}},
                     search={"algorithm": "grid", "max_concurrent": 1}, fidelity={"text_every": 16},
                     train={"max_steps": 32, "epochs": 8})  # 32 pairs / batch 8 = 4 steps an epoch
    shape = {"n_trials": 4, "steps": (16, 32)}
    code, out, stop = _run_a_driver_that_stops_itself(tmp_path, spec, storage)
    before = _check_stopped_mid_sweep(storage, code, out, stop, **shape)
    sweep_id = _check_resume_loses_or_duplicates_no_row(storage, before, capsys, **shape)
    # Stopping a finished sweep, or a folder without a sweep: refused.
    _check_stop_refuses(storage, capsys, sweep_id, "is finished", "nothing to stop")
    empty = tmp_path / "empty"
    empty.mkdir()
    _check_stop_refuses(empty, capsys, "holds no sweep", "sage sweep run")
    assert list(empty.iterdir()) == []


@pytest.mark.slow
def test_multi_node_cluster_refuses_node_local_storage_before_any_trial(tmp_path, monkeypatch, capsys):
    import ray
    from ray.cluster_utils import Cluster

    from sweeps.cluster_checks import SHARED_FSTYPES, SHARED_STORAGE_ENV, mount_fstype

    monkeypatch.delenv(SHARED_STORAGE_ENV, raising=False)
    storage = tmp_path / "sweep"
    fstype = mount_fstype(str(storage), mounts=Path("/proc/mounts").read_text())
    assert fstype not in SHARED_FSTYPES, f"precondition: {tmp_path} must be node-local, not {fstype}"
    # One short trial that needs the worker's custom resource.
    spec = tiny_spec(tmp_path, space={"lambda_esp": {"grid": [1.0]}}, fidelity={"text_every": 2},
                     resources={"cpus": 1, "custom": {"slot": 1}}, search={"algorithm": "grid", "max_concurrent": 1})
    argv = ["sweep", "run", str(spec), "--set", "max_steps=2"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"slot": 1})
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        assert sum(1 for n in ray.nodes() if n["Alive"]) == 2

        code, out, err = _sage(argv, capsys)
        assert code == 2, out + err
        assert err.startswith("error: storage: ") and err.count("\n") == 1 and "Traceback" not in err
        for words in (repr(str(storage)), "is a local path", "this Ray cluster has 2 nodes",
                      "s3://", f"{SHARED_STORAGE_ENV}=1"):
            assert words in err, err
        # Refused before anything started: no results, no base data, no Tune experiment, no sweep
        # recorded (status says so, and a later run in the same folder is not blocked).
        assert not (storage / "results").exists() and _rows(storage) == []
        assert not (storage / "cache").exists() and not (storage / "ray").exists()
        assert not (storage / "sweep.json").exists() and not (storage / "spec.yaml").exists()
        code, _, err = _sage(["sweep", "status", str(storage)], capsys)
        assert code == 2 and "holds no sweep" in err

        # Declared shared (the simulated nodes share this filesystem): the same storage now runs.
        monkeypatch.setenv(SHARED_STORAGE_ENV, "1")
        code, out, err = _sage(argv, capsys)
        assert code == 0, out + err
        meta = _meta(storage)
        assert meta["state"] == "finished" and meta["counts"]["finished"] == 1, meta
        rows = _rows(storage)
        assert [(r["step"], r["fidelity"], r["status"]) for r in rows] == [(2, "text", "finished")]
        assert rows[0]["sweep_id"] == meta["sweep_id"] and rows[0]["lambda_esp"] == 1.0
    finally:
        ray.shutdown()
        cluster.shutdown()
