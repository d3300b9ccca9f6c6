"""Fault tolerance: driver SIGKILL + resume, a node lost mid-sweep, a trial process that dies after
its final report (real Ray clusters).

Every fault strikes at a known point (right after the results store writes, or right after the
trainer returned from a run whose final report went out), not at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import same_processes, stop
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


#: The driver: a sweep whose process SIGKILLs itself right after the results store has written
#: ``KILL_AFTER`` rows, leaving a note of the rows written and of the processes it started.
DRIVER = """
import json, os, signal, sys
import psutil
from analysis.store import KEY_COLUMNS, ResultStore
import sweeps

spec, note, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
written, write = [], ResultStore.write

def write_then_die(self, rows):
    rows = list(rows)
    n = write(self, rows)
    written.extend([r[k] for k in KEY_COLUMNS] for r in rows)
    if len(written) >= kill_after:
        started = [[p.pid, p.create_time()] for p in psutil.Process().children(recursive=True)]
        with open(note, "w") as fh:
            json.dump({"rows": written, "started": started}, fh)
        os.kill(os.getpid(), signal.SIGKILL)
    return n

ResultStore.write = write_then_die
sweeps.run(spec, progress=False)
"""
KILL_AFTER = 2


def _key(row: dict) -> tuple:
    from analysis.store import KEY_COLUMNS

    return tuple(row[k] for k in KEY_COLUMNS)


@pytest.mark.slow
def test_driver_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    import sweeps

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # 16 steps a trial, text metrics every 8: 2 rows a trial, 8 in all.
    common = dict(scheduler={"kind": "fifo"}, search={"algorithm": "grid", "max_concurrent": 1},
                  fidelity={"text_every": 8}, train={"max_steps": 16, "epochs": 4})
    killed, note = tmp_path / "killed", tmp_path / "killed-note.json"
    spec = tiny_spec(tmp_path, storage=str(killed / "sweep"), **common)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec), str(note), str(KILL_AFTER)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == -signal.SIGKILL, f"the driver exited with {code} instead of dying at the injected fault"
    died = json.loads(note.read_text())
    # The killed driver's local Ray (its descendants, still the same processes) goes with it.
    assert stop(same_processes(died["started"])) == []
    before = _rows(killed / "sweep")
    assert sorted(map(_key, before)) == sorted(map(tuple, died["rows"]))  # exactly what was written
    assert KILL_AFTER <= len(before) < 8, "the driver was killed mid-sweep"
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
    from analysis.store import ResultStore

    # The simulated nodes share this machine's filesystem, so the local storage folder is shared.
    monkeypatch.setenv("SAGE_SHARED_STORAGE", "1")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, resources={"slot": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        spec = tiny_spec(tmp_path, resources={"cpus": 1, "custom": {"slot": 1}}, max_failures=2,
                         search={"algorithm": "grid", "max_concurrent": 2})
        removed: list[int] = []  # rows in the store when the node went
        write = ResultStore.write

        def write_then_remove_node(self, rows):
            n = write(self, rows)
            if not removed:  # the first write: the sweep is running, its trials spread over both nodes
                removed.append(len(self.read().to_pylist()))
                cluster.remove_node(workers[0], allow_graceful=False)
            return n

        monkeypatch.setattr(ResultStore, "write", write_then_remove_node)
        outcome = sweeps.run(str(spec), progress=False)
        assert removed and removed[0] < 8, "the node was not removed mid-sweep"
        assert outcome.state == "finished", outcome.summary()
        rows = _rows(tmp_path / "sweep")
        keys = [(r["trial_id"], r["step"]) for r in rows]
        assert len(keys) == len(set(keys)) == 8
        assert {r["status"] for r in rows if r["step"] == 4} == {"finished"}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_trial_process_that_dies_after_its_final_report_leaves_the_trial_finished(tmp_path):
    """Issue 27, in-process trials: the trial's process aborts (SIGABRT) once the trainer returned from
    a run whose final report and checkpoint reached Tune. Tune sees the trial fail; the retry reports
    the final checkpoint again instead of training, so the trial is finished, every row once."""
    import ray

    import sweeps
    from sage_core.checkpoint import read_meta
    from sweeps.fault_injection import ABORT_AFTER_FINAL_ENV
    from sweeps.trial import REPORT_FILE

    switch = tmp_path / "armed"
    switch.touch()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {ABORT_AFTER_FINAL_ENV: f"0:{switch}"}})
    try:
        spec = tiny_spec(tmp_path, space={"lambda_esp": {"grid": [2.0]}},
                         search={"algorithm": "grid", "max_concurrent": 1})
        outcome = sweeps.run(str(spec), progress=False)
    finally:
        ray.shutdown()
    assert not switch.exists(), "the trial never reached the injected abort"
    assert outcome.state == "finished"
    assert outcome.counts == {"finished": 1, "pruned": 0, "failed": 0, "unfinished": 0}
    rows = sorted(_rows(tmp_path / "sweep"), key=lambda r: r["step"])
    assert [(r["step"], r["status"]) for r in rows] == [(2, "running"), (4, "finished")]
    assert read_meta(Path(rows[-1]["checkpoint"]))["step"] == 4
    tune_dir = tmp_path / "sweep" / "ray" / "tune"
    assert len(list(tune_dir.glob("*/error.txt"))) == 1
    (result_file,) = tune_dir.glob("*/result.json")
    reported = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
    # Tune fetches a trial's results from its process: whether it took the first copy of the final
    # report before the process died is Ray's scheduling, so step 4 is in Tune's log once or twice.
    # Every copy is the first run's report (its wall time and loss): nothing was retrained.
    steps = [r["step"] for r in reported]
    assert steps in ([2, 4], [2, 4, 4]), steps
    saved = json.loads((Path(rows[-1]["checkpoint"]) / REPORT_FILE).read_text())
    assert saved["final"] == 1.0 and saved["step"] == 4
    for again in reported[1:]:
        assert again["trial_wall_s"] == saved["trial_wall_s"] and again["loss"] == saved["loss"] == rows[-1]["loss"]


#: A sweep driver (``run SPEC`` or ``resume DIR``) that logs every rung decision of the Pareto
#: scheduler as it is made, and SIGKILLs itself right after its ``KILL_AT``-th one (0: never), before
#: Tune acts on it, leaving a note of the processes it started.
SCHEDULER_DRIVER = """
import json, os, signal, sys
import psutil
import sweeps
from sweeps.pareto_scheduler import ParetoSuccessiveHalving

mode, target, log, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
decide, made = ParetoSuccessiveHalving.decide, []

def logged(self, trial_id, result):
    decision = decide(self, trial_id, result)
    rung = self._is_rung(result)
    if rung is not None and trial_id not in made:
        made.append(trial_id)
        with open(log, "a") as fh:
            fh.write(json.dumps([trial_id, rung, decision]) + "\\n")
        if len(made) == kill_at:
            started = [[p.pid, p.create_time()] for p in psutil.Process().children(recursive=True)]
            with open(log + ".started", "w") as fh:
                json.dump(started, fh)
            os.kill(os.getpid(), signal.SIGKILL)
    return decision

ParetoSuccessiveHalving.decide = logged
sweeps.run(target, progress=False) if mode == "run" else sweeps.resume(target)
"""


def _drive(mode: str, target: Path, log: Path, kill_at: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "TUNE_GLOBAL_CHECKPOINT_S": "0"}  # Tune saves its experiment state after every controller step
    proc = subprocess.Popen([sys.executable, "-c", SCHEDULER_DRIVER, mode, str(target), str(log), str(kill_at)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _decisions(log: Path) -> list[tuple[str, int, str]]:
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_driver_killed_at_a_rung_decision_then_resumed_decides_every_trial_exactly_once(tmp_path):
    """The scheduler's state is written when Tune saves its experiment state. The driver dies right
    after its 2nd rung decision (before Tune acts on it): the state file holds the decisions behind the
    trial states Tune saved; the resumed driver decides every other trial, and none of those again."""
    import math

    from sweeps.pareto_scheduler import read_state
    from tests.pareto_oracle import brute_rank_crowding, minimise

    storage = tmp_path / "sweep"
    spec = tiny_spec(tmp_path, storage=str(storage), search={"algorithm": "grid", "max_concurrent": 1},
                     scheduler={"kind": "pareto_sh", "eta": 2}, fidelity={"text_every": 2, "rungs": [2]},
                     objectives=[{"metric": "concept_auc", "mode": "min"}, {"metric": "util_sib", "mode": "max"}])
    killed_log, resumed_log = tmp_path / "killed.jsonl", tmp_path / "resumed.jsonl"
    state_file = storage / "scheduler_state.json"
    assert _drive("run", spec, killed_log, 2) == -signal.SIGKILL, "the driver did not die at the injected fault"
    assert stop(same_processes(json.loads(Path(f"{killed_log}.started").read_text()))) == []
    killed = _decisions(killed_log)
    assert len(killed) == 2
    saved_recorded, saved_pruned = read_state(state_file)
    saved = {(t, r) for r, rows in saved_recorded.items() for t in rows}
    # Tune saved after the 1st decision's step; the decision the driver died in was never saved.
    assert saved == {(t, r) for t, r, _ in killed[:1]}
    assert saved_pruned == {t: r for t, r, d in killed if (t, r) in saved and d == "STOP"}

    assert _drive("resume", storage, resumed_log, 0) == 0
    resumed = _decisions(resumed_log)
    recorded, pruned = read_state(state_file)
    final = [(t, r) for r, rows in recorded.items() for t in rows]
    assert not saved & {(t, r) for t, r, _ in resumed}  # nothing the saved state held is decided again
    assert sorted(saved | {(t, r) for t, r, _ in resumed}) == sorted(final)  # every decision once
    assert len(resumed) == len({t for t, _, _ in resumed}) == 4 - len(saved)
    rows = _rows(storage)
    at_rung = {r["trial_id"]: r for r in rows if r["step"] == 2}
    assert sorted(at_rung) == sorted(t for t, _ in final)  # every trial reached the rung once
    # The decisions by the rule's definition, in the order the final state recorded them, from the
    # objectives the store holds (brute-force ranks and crowding, tests/pareto_oracle.py).
    order = list(recorded[2])
    points = minimise([[at_rung[t]["concept_auc"], at_rung[t]["util_sib"]] for t in order], [1, -1])
    expected_pruned = set()
    for n in range(1, len(order) + 1):
        ranks, crowd = brute_rank_crowding(points[:n])
        me = n - 1
        ahead = sum(1 for j in range(n) if ranks[j] < ranks[me] or (ranks[j] == ranks[me] and crowd[j] > crowd[me]))
        if ahead >= math.ceil(n / 2):
            expected_pruned.add(order[n - 1])
    assert set(pruned) == expected_pruned
    assert {(t, d) for t, _, d in resumed} == {(t, "STOP" if t in expected_pruned else "CONTINUE")
                                               for t, _, _ in resumed}
    assert sorted((r["trial_id"], r["step"]) for r in rows) == sorted(
        [(t, 2) for t in order] + [(t, 4) for t in order if t not in expected_pruned])


def test_faults_are_read_once_as_callbacks_and_unset_add_none(tmp_path):
    """What the trial passes to its trainer, read once when it starts: nothing when unset (so no
    per-step cost outside tests), else one callback per armed fault with the step, rank and switch."""
    from sweeps import fault_injection as fi

    assert fi.fault_callbacks({}) == [] and fi.fault_callbacks({fi.FAULT_ENV: "", fi.ABORT_AFTER_FINAL_ENV: ""}) == []
    kill, abort = fi.fault_callbacks({fi.FAULT_ENV: f"7:1:{tmp_path / 'k'}",
                                      fi.ABORT_AFTER_FINAL_ENV: f"0:{tmp_path / 'a'}"})
    assert isinstance(kill, fi.KillAtStep) and (kill.step, kill.rank, kill.armed) == (7, 1, tmp_path / "k")
    assert isinstance(abort, fi.AbortAfterFinalReport) and (abort.rank, abort.armed) == (0, tmp_path / "a")
