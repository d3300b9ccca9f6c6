"""Fault tolerance: driver SIGKILL + resume, and a node lost mid-sweep (real Ray clusters)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_sweep_run import tiny_spec

TIMING = {"wall_s", "device_s", "checkpoint", "sweep_id", "trial_id", "code_version", "cache_dir"}


def _rows(storage: Path) -> list[dict]:
    from analysis.store import ResultStore

    if not (storage / "results").exists():
        return []
    return ResultStore(storage / "results").read().to_pylist()


def _comparable(rows: list[dict]) -> set[tuple]:
    """Rows without timing/identity columns; metrics rounded (same math, another process)."""
    out = set()
    for r in rows:
        items = []
        for k, v in sorted(r.items()):
            if k in TIMING or k.startswith("trial_"):
                continue
            items.append((k, round(v, 4) if isinstance(v, float) else v))
        out.add(tuple(items))
    return out


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited with code {proc.returncode} before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_driver_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    import sweeps

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # 16 steps a trial, text metrics every 8: trials reuse their actor, so short ones would all
    # finish between two polls and leave nothing to kill mid-sweep.
    common = dict(scheduler={"kind": "fifo"}, search={"algorithm": "grid", "max_concurrent": 1},
                  fidelity={"text_every": 8}, train={"max_steps": 16, "epochs": 4})
    killed = tmp_path / "killed"
    spec = tiny_spec(tmp_path, storage=str(killed / "sweep"), **common)
    proc = subprocess.Popen([sys.executable, "-m", "sweeps", "sweep", "run", str(spec)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Trials reuse their actor, so the next one starts at once: kill as soon as rows exist.
        _wait_for(lambda: len(_rows(killed / "sweep")) >= 2, 240, "two result rows", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    before = _rows(killed / "sweep")
    assert 2 <= len(before) < 8, "the driver was killed mid-sweep"
    time.sleep(3.0)  # let the orphaned local Ray of the killed driver shut down
    outcome = sweeps.resume(str(killed / "sweep"))
    assert outcome.state == "finished", outcome.summary()
    after = _rows(killed / "sweep")
    keys = [(r["trial_id"], r["step"]) for r in after]
    assert len(keys) == len(set(keys)) == 8

    clean = tmp_path / "clean"  # same encoder and prompt files, another sweep folder
    ref = sweeps.run(str(tiny_spec(tmp_path, storage=str(clean / "sweep"), **common)), progress=False)
    assert ref.state == "finished"
    assert _comparable(after) == _comparable(_rows(clean / "sweep"))


@pytest.mark.slow
def test_lost_node_reschedules_its_trials_from_checkpoints(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    import sweeps

    # The simulated nodes share this machine's filesystem, so the local storage folder is shared.
    monkeypatch.setenv("SAGE_SHARED_STORAGE", "1")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, resources={"slot": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        spec = tiny_spec(tmp_path, resources={"cpus": 1, "custom": {"slot": 1}}, max_failures=2,
                         search={"algorithm": "grid", "max_concurrent": 2})
        removed = threading.Event()

        def remove_when_busy():
            try:
                _wait_for(lambda: len(_rows(tmp_path / "sweep")) >= 1, 300, "a first result")
            except AssertionError:
                return
            cluster.remove_node(workers[0], allow_graceful=False)
            removed.set()

        killer = threading.Thread(target=remove_when_busy, daemon=True)
        killer.start()
        outcome = sweeps.run(str(spec), progress=False)
        killer.join(5)
        assert removed.is_set(), "the node was not removed mid-sweep"
        assert outcome.state == "finished", outcome.summary()
        rows = _rows(tmp_path / "sweep")
        keys = [(r["trial_id"], r["step"]) for r in rows]
        assert len(keys) == len(set(keys)) == 8
        assert {r["status"] for r in rows if r["step"] == 4} == {"finished"}
    finally:
        ray.shutdown()
        cluster.shutdown()
