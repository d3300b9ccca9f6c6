"""SweepDir (paths, files of a sweep folder) and SweepRecord (the state machine of sweep.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sage_core.defs.errors import StorageError
from sweeps.sweep_dir import TRANSITIONS, SweepDir, SweepRecord

ALL = ("running", "finished", "failed", "interrupted", "stopped")
# The diagram of the module docstring, written out independently of TRANSITIONS.
LEGAL = {("running", s) for s in ALL} | {(s, "running") for s in ("failed", "interrupted", "stopped")}


def _on_disk(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text(encoding="utf-8"))


def _record_in(tmp_path: Path, state: str) -> SweepRecord:
    folder = SweepDir.at(str(tmp_path / "sw"))
    record = SweepRecord(folder, {"sweep_id": "s-1", "name": "s", "state": state,
                                  "started": "2026-01-01T00:00:00+00:00", "driver_pid": os.getpid()})
    record.save()
    return record


def test_paths_of_a_local_folder_and_a_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = SweepDir.at("runs/demo/")
    assert local.root == str(tmp_path / "runs" / "demo") and not local.is_uri
    assert local.meta_file == f"{local.root}/sweep.json" and local.results == f"{local.root}/results"
    assert local.experiment == f"{local.root}/ray/tune"
    assert local.scheduler_state == f"{local.root}/scheduler_state.json"
    remote = SweepDir.at("s3://bucket/sweeps/a")
    assert remote.root == "s3://bucket/sweeps/a" and remote.is_uri and remote.scheduler_state is None
    assert remote.resume_command() == "sage sweep resume s3://bucket/sweeps/a"


@pytest.mark.parametrize("start", ALL)
@pytest.mark.parametrize("target", ALL)
def test_every_transition_is_allowed_or_refused_as_the_diagram_says(tmp_path, start, target):
    record = _record_in(tmp_path, start)
    folder = Path(record.folder.root)
    if (start, target) in LEGAL:
        record.move_to(target, counts={"finished": 1})
        doc = _on_disk(folder)
        assert doc["state"] == target == record.state and doc["counts"] == {"finished": 1}
        assert ("ended" in doc) == (target != "running")
        assert ("resumed" in doc) == (target == "running")
    else:
        with pytest.raises(StorageError) as err:
            record.move_to(target)
        assert f"state {start!r} -> {target!r} is not allowed" in str(err.value)
        assert _on_disk(folder)["state"] == start == record.state  # nothing written
    assert set(TRANSITIONS) == set(ALL)


def test_a_new_sweep_is_running_under_this_process_and_notes_keep_the_state(tmp_path):
    folder = SweepDir.at(str(tmp_path / "sw"))
    assert not folder.holds_sweep()
    record = SweepRecord.new(folder, sweep_id="q-20260101-000000", name="q")
    record.save()
    doc = _on_disk(tmp_path / "sw")
    assert doc["state"] == "running" and doc["driver_pid"] == os.getpid() and folder.holds_sweep()
    record.note(tune_finished=True)
    assert _on_disk(tmp_path / "sw")["tune_finished"] is True and _on_disk(tmp_path / "sw")["state"] == "running"
    with pytest.raises(StorageError, match="move_to"):
        record.note(state="finished")
    with pytest.raises(TypeError):
        record.meta["state"] = "finished"  # read-only view: state changes only through move_to


def test_resume_is_refused_when_finished_or_its_driver_runs(tmp_path):
    folder = SweepDir.at(str(tmp_path / "sw"))
    done = _record_in(tmp_path, "finished")
    with pytest.raises(StorageError, match="already finished"):
        SweepRecord.for_resume(folder, done.meta)
    # A live driver: a process this test starts (started after sweep.json's timestamps would make it
    # a pid reuser, so sweep.json says it started now).
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        live = SweepRecord(folder, {"sweep_id": "s-1", "state": "running", "driver_pid": proc.pid,
                                    "started": "2999-01-01T00:00:00+00:00"})
        with pytest.raises(StorageError, match=f"is running \\(driver pid {proc.pid}\\)"):
            SweepRecord.for_resume(folder, live.meta)
    finally:
        proc.stdin.close()
        proc.wait()
    # Its driver is gone (exited and reaped): a new driver takes over, running -> running.
    taken = SweepRecord.for_resume(folder, live.meta)
    taken.move_to("running")
    assert _on_disk(tmp_path / "sw")["driver_pid"] == os.getpid()


def test_stop_file_round_trip(tmp_path):
    folder = SweepDir.at(str(tmp_path / "sw"))
    assert not folder.stop_requested()
    path = folder.request_stop("s-1")
    assert path == str(tmp_path / "sw" / "STOP") and folder.stop_requested()
    assert json.loads(Path(path).read_text())["sweep_id"] == "s-1"
    folder.clear_stop()
    assert not folder.stop_requested() and not Path(path).exists()
