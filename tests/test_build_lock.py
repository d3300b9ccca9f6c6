"""A compile lock left by a killed build of DeepSpeed's CPU op is named with how to remove it, before
DeepSpeed would wait on it forever; a fresh lock (a build in progress), another op's or another
interpreter's lock, and an absent one pass. The folder is the one torch itself builds in."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sage_core.build_lock import STALE_AFTER_S, check_build_locks, extensions_dir, stale_locks
from sage_core.defs.errors import ModelError


def _lock(path: Path, *, age_s: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_only_the_ops_own_lock_older_than_a_build_is_stale(tmp_path):
    now = time.time()
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    _lock(tmp_path / "cpu_adam" / "lock", age_s=2 * 3600, now=now)            # an op this project never builds
    _lock(tmp_path / "py310_cu121" / "deepspeed_shm_comm" / "lock", age_s=2 * 3600, now=now)  # another layout
    assert stale_locks(tmp_path, now=now) == []
    _lock(lock, age_s=30, now=now)                                             # a build in progress
    assert stale_locks(tmp_path, now=now) == []
    _lock(lock, age_s=STALE_AFTER_S + 60, now=now)
    assert [(p, round(a)) for p, a in stale_locks(tmp_path, now=now)] == [(lock, STALE_AFTER_S + 60)]


def test_the_folder_is_the_one_torch_builds_in(tmp_path, monkeypatch):
    from torch.utils.cpp_extension import _get_build_directory

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert extensions_dir() / "deepspeed_shm_comm" == Path(_get_build_directory("deepspeed_shm_comm", False))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # torch's default root follows it
    assert extensions_dir() / "deepspeed_shm_comm" == Path(_get_build_directory("deepspeed_shm_comm", False))
    assert str(extensions_dir()).startswith(str(tmp_path / "cache"))


def test_a_stale_lock_is_refused_with_the_command_that_clears_it(tmp_path):
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
