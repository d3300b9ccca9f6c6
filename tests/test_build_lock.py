"""A compile lock left by a killed DeepSpeed op build is named with how to remove it, before DeepSpeed
would wait on it forever; a fresh lock (a build in progress) and an absent one pass."""

from __future__ import annotations

import os
import time

import pytest

from sage_core.build_lock import STALE_AFTER_S, check_build_locks, stale_locks
from sage_core.defs.errors import ModelError


def _lock(path, *, age_s: float, now: float):
    path.parent.mkdir(parents=True)
    path.write_text("")
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_only_locks_older_than_a_build_are_stale(tmp_path):
    now = time.time()
    # the TORCH_EXTENSIONS_DIR layout, then torch's default one (a python-and-device folder above the op)
    old = _lock(tmp_path / "deepspeed_shm_comm" / "lock", age_s=STALE_AFTER_S + 60, now=now)
    nested = _lock(tmp_path / "py311_cpu" / "cpu_adam" / "lock", age_s=2 * 3600, now=now)
    _lock(tmp_path / "building_now" / "lock", age_s=30, now=now)
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / "built.so").write_text("")
    found = stale_locks(tmp_path, now=now)
    assert [p for p, _ in found] == sorted([old, nested])
    assert sorted(round(a) for _, a in found) == [STALE_AFTER_S + 60, 2 * 3600]


def test_a_stale_lock_is_refused_with_the_command_that_clears_it(tmp_path, monkeypatch):
    lock = _lock(tmp_path / "deepspeed_shm_comm" / "lock", age_s=3600, now=time.time())
    with pytest.raises(ModelError) as err:
        check_build_locks(tmp_path)
    msg = str(err.value)
    assert f"rm {lock}" in msg and "(60 min old)" in msg and "\n" not in msg
    lock.unlink()
    check_build_locks(tmp_path)  # nothing left: passes


def test_sage_doctor_names_a_stale_lock_instead_of_hanging(tmp_path, monkeypatch, capsys):
    from sweeps.cli import main

    lock = _lock(tmp_path / "deepspeed_shm_comm" / "lock", age_s=3600, now=time.time())
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"rm {lock}" in err and "Traceback" not in err
    assert lock.exists()  # named, never removed behind the user's back
