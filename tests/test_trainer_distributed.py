"""Data-parallel training: 2 gloo ranks (real DeepSpeed engines) train the model one process trains."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sage_core.checkpoint import list_checkpoints
from sage_core.distributed import end_process_group, group_exists, import_group_holders
from sage_core.trainer import Trainer
from tests.test_trainer import _weights


def _rank_main(rank: int, world: int, port: int, values: dict, out: str) -> None:
    # The rendezvous store is the parent's (as torchrun's agent holds it): every rank connects as a client.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True", OMP_NUM_THREADS="1")
    if values.get("micro_batch_size") is None:
        # As under Ray Train: the group exists before the trainer starts. (Otherwise the trainer
        # starts it from the environment, as under the deepspeed/torchrun launchers.) The modules
        # that would hold the group as a default argument are imported first, as the trainer does.
        import_group_holders()
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from sage_core.defs.config import load_config

    try:
        res = Trainer(load_config(overrides=values), out_dir=out, progress=False, evaluate=False).fit()
    finally:
        end_process_group()  # the group this helper started (shard); the trainer ended its own (accumulate)
    # Then the interpreter's own exit, as under a launcher: no communication thread may be left to
    # meet a half-finalised interpreter (issue 27: SIGABRT at exit, after the work was done).
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"checkpoint": str(res.final_checkpoint) if res.final_checkpoint else None, "loss": res.metrics["loss"],
         "step": res.step, "gloo_threads": gloo_threads()}))


def gloo_threads() -> list[str]:
    """This process's live gloo threads (worker and I/O loops), by their kernel names."""
    names = [Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()]
    return sorted(n for n in names if "gloo" in n)


def _run_ranks(cfg, out: Path, world: int = 2) -> list[dict]:
    values = json.loads(json.dumps(cfg.to_dict()))
    # The store binds port 0 and keeps it for the whole run: no free-port-then-release race with
    # anything else on the machine picking the same port in between.
    store = torch.distributed.TCPStore("127.0.0.1", 0, None, True, wait_for_workers=False)
    # join=True raises if a rank exits non-zero or by a signal, after its work or not.
    torch.multiprocessing.spawn(_rank_main, args=(world, store.port, values, str(out)), nprocs=world, join=True)
    del store
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def _update(ckpt: Path, w0: dict[str, torch.Tensor]) -> torch.Tensor:
    w = _weights(ckpt)
    return torch.cat([(w[k] - w0[k]).flatten() for k in w])


@pytest.mark.parametrize("micro", [None, 2], ids=["shard", "shard+accumulate"])
def test_two_ranks_train_the_same_model_as_one_process(micro, tiny_cfg, tiny_clip, tmp_path):
    from safetensors.torch import load_file

    # A large eps makes AdamW nearly linear in the gradient, so a mis-scaled gradient shows.
    cfg = tiny_cfg(max_steps=3, eval_every=3, micro_batch_size=micro, seed=3, adam_eps=10.0, lr=0.5)
    one = Trainer(cfg, out_dir=tmp_path / "one", progress=False, evaluate=False).fit()
    ranks = _run_ranks(cfg, tmp_path / "two")
    # Rank 0 alone writes checkpoints; every rank saw the same full-batch loss.
    assert ranks[0]["checkpoint"] is not None and ranks[1]["checkpoint"] is None
    assert [r["gloo_threads"] for r in ranks] == [[], []]  # every group ended before the interpreter's exit
    assert [r["step"] for r in ranks] == [3, 3]
    assert len(list_checkpoints(tmp_path / "two")) >= 1
    assert ranks[0]["loss"] == pytest.approx(ranks[1]["loss"], rel=1e-6)
    assert ranks[0]["loss"] == pytest.approx(one.metrics["loss"], rel=1e-4)
    w0 = load_file(str(tiny_clip / "text_encoder" / "model.safetensors"))
    d1, d2 = _update(one.final_checkpoint, w0), _update(Path(ranks[0]["checkpoint"]), w0)
    # Adam amplifies float noise in near-zero gradients element-wise, so compare whole updates.
    assert d1.norm() > 0
    assert (d1 - d2).norm() / d1.norm() < 1e-2


def test_a_trainer_ends_the_group_it_started_and_leaves_a_callers_group_up(tiny_cfg, tmp_path):
    """Issue 27: the trainer's teardown joins the gloo threads of the group it started (they used to
    outlive the run, held by the engine's hooks on the module, until interpreter exit); a group the
    caller made (as Ray Train does) is the caller's, and still works after the run."""
    cfg = tiny_cfg(max_steps=2, eval_every=2)
    assert not group_exists(), "an earlier test left a torch.distributed group up"
    before = gloo_threads()
    res = Trainer(cfg, out_dir=tmp_path / "own", progress=False, evaluate=False).fit()
    assert res.step == 2 and not group_exists()
    assert gloo_threads() == before
    # A second run in the same process starts a fresh group (DeepSpeed's references were dropped too).
    assert Trainer(cfg, out_dir=tmp_path / "again", progress=False, evaluate=False).fit().step == 2
    assert gloo_threads() == before

    store = torch.distributed.TCPStore("127.0.0.1", 0, 1, True)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert Trainer(cfg, out_dir=tmp_path / "theirs", progress=False, evaluate=False).fit().step == 2
        assert group_exists()
        t = torch.tensor([7.0])
        torch.distributed.all_reduce(t)
        assert t.item() == 7.0
    finally:
        end_process_group()
    assert not group_exists() and gloo_threads() == before


def test_batch_that_does_not_split_over_the_workers_is_a_clear_error(tiny_cfg):
    from sage_core.batch_plan import plan_batches
    from sage_core.defs.errors import ConfigError

    cfg = tiny_cfg(batch_size=8, lambda_lsa=0.0, max_steps=None)  # the run reaches the partial batch
    with pytest.raises(ConfigError, match=r"batch_size=8 must be a multiple of the 3 data-parallel workers"):
        plan_batches(cfg, pairs=48, world=3)
    with pytest.raises(ConfigError, match=r"last batch of each epoch has 2 pairs \(50 pairs in all\), fewer than "
                                          r"4 worker\(s\) x 1 micro-batch\(es\); pick"):
        plan_batches(cfg, pairs=50, world=4)
    # 50 = 6 x 8 + 2: two workers share the last two pairs, one each
    assert plan_batches(cfg, pairs=50, world=2).per_epoch == 7
