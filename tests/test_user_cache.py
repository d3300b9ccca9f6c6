"""The user-level, content-addressed cache: where it lives, reuse across sweeps, one builder per key."""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.connection import wait
from pathlib import Path

import pytest
import torch

from sage_core.cache import build_once, load_cached
from sage_core.defs.locations import CACHE_ENV, default_cache_dir


def test_the_test_session_never_uses_the_users_home():
    assert os.environ[CACHE_ENV] and default_cache_dir() == Path(os.environ[CACHE_ENV])
    assert not default_cache_dir().is_relative_to(Path.home() / ".cache")


def test_default_is_the_env_var_else_the_home_cache(tmp_path, monkeypatch):
    from sage_core.defs.config import load_config

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "shared"
    assert load_config(overrides={}).resolved_cache_dir() == tmp_path / "shared"
    assert load_config(overrides={"cache_dir": str(tmp_path / "mine")}).resolved_cache_dir() == tmp_path / "mine"
    from sage_core.clip_init import sd14_tokenizer

    sd14_tokenizer()  # the SD vocabulary files go to the same user-level cache
    assert [p.name.startswith("clip-bpe-") for p in (tmp_path / "shared").iterdir()] == [True]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv(CACHE_ENV)
        else:
            monkeypatch.setenv(CACHE_ENV, unset)
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "sage-sweeps"


def test_sweep_folders_share_the_user_cache_and_the_spec_can_point_elsewhere(tmp_path, monkeypatch):
    from sweeps.spec import base_train_config, load_spec

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "user"))
    a = base_train_config(load_spec("quickstart", storage=str(tmp_path / "a"), check=False),
                          storage_root=tmp_path / "a")
    b = base_train_config(load_spec("quickstart", storage=str(tmp_path / "b"), check=False),
                          storage_root=tmp_path / "b")
    assert a["cache_dir"] == b["cache_dir"] == str(tmp_path / "user")
    # `sage sweep run --cache-dir DIR` is this override (a cluster's shared folder)
    shared = load_spec("quickstart", storage=str(tmp_path / "c"), check=False,
                       overrides={"train.cache_dir": str(tmp_path / "nfs" / "cache")})
    assert base_train_config(shared)["cache_dir"] == str(tmp_path / "nfs" / "cache")


def test_a_second_sweep_builds_nothing(tiny_cfg, tmp_path, monkeypatch):
    """prepare() is what the driver runs before the trials: the second run finds every entry."""
    from sage_core.trainer import prepare

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "user"))
    cfg = tiny_cfg(cache_dir=None)
    prepare(cfg, progress=False)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "user").rglob("*.safetensors")}
    assert {p.parent.name for p in files} >= {"embeddings", "codebook"}
    prepare(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "user").rglob("*.safetensors")} == files


def _seeded() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {"x": torch.randn(64, 8, generator=g)}


def _build_logged(log: str) -> dict[str, torch.Tensor]:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    return _seeded()


def _child(path: str, log: str, out: str) -> None:
    import functools

    from safetensors.torch import save_file

    got = build_once(Path(path), functools.partial(_build_logged, log))
    save_file(got, out)


def _blocked_on(lock: Path) -> int:
    """Processes waiting for a lock on ``lock`` (the ``->`` lines of /proc/locks for its inode)."""
    st = os.stat(lock)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and ident in line)


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="needs Linux /proc/locks to see blocked builders")
def test_two_processes_building_one_key_build_it_once(tmp_path):
    import fcntl

    path = tmp_path / "cache" / "embeddings" / "x-0123.safetensors"
    path.parent.mkdir(parents=True)
    lock = path.with_name(path.name + ".lock")
    log = tmp_path / "builds.log"
    ctx = mp.get_context("spawn")
    with open(lock, "a+b") as held:
        # Hold the entry's lock, start two builders, and let go only once both miss the cache and
        # wait for the lock: then they race for it, and the loser must load, not build.
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        procs = [ctx.Process(target=_child, args=(str(path), str(log), str(tmp_path / f"out{i}.safetensors")))
                 for i in range(2)]
        for p in procs:
            p.start()
        while _blocked_on(lock) < 2:
            exited = wait([p.sentinel for p in procs], timeout=0.05)
            assert not exited, "a builder finished while the entry's lock was held: it did not wait for it"
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    builders = log.read_text().split()
    assert len(builders) == 1 and int(builders[0]) in {p.pid for p in procs}
    expected = _seeded()["x"]
    assert torch.equal(load_cached(path)["x"], expected)
    for i in range(2):
        assert torch.equal(load_cached(tmp_path / f"out{i}.safetensors")["x"], expected)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([lock.name, path.name])  # no temporary left


def test_an_unusable_entry_is_rebuilt_and_an_unwritable_cache_is_one_clear_error(tmp_path):
    from sage_core.defs.errors import StorageError

    path = tmp_path / "c" / "e.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"not safetensors")
    assert torch.equal(build_once(path, _seeded)["x"], _seeded()["x"])
    assert torch.equal(load_cached(path)["x"], _seeded()["x"])
    (tmp_path / "a-file").write_text("not a folder")
    bad = tmp_path / "a-file" / "cache"
    with pytest.raises(StorageError, match=rf"cannot write the cache in {bad}.*{CACHE_ENV}"):
        build_once(bad / "e.safetensors", _seeded)
