"""The trainer on a tiny CLIP text model with a real DeepSpeed engine (CPU, gloo)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from sage_core.checkpoint import list_checkpoints, read_meta
from sage_core.defs.errors import DataError, NonFiniteLossError
from sage_core.trainer import Trainer, TrainerCallback


class Recorder(TrainerCallback):
    def __init__(self, stop_at: int | None = None):
        self.steps, self.evals, self.ckpts, self.stop_at = [], [], [], stop_at

    def on_step(self, info):
        self.steps.append(info)

    def on_evaluate(self, info):
        self.evals.append(info)
        return self.stop_at is not None and info.step >= self.stop_at

    def on_checkpoint(self, path, step):
        self.ckpts.append((path, step))


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from sage_core.checkpoint import load_weights

    return load_weights(ckpt)


def test_des_training_lowers_loss_keeps_base_cache_and_reloads(tiny_cfg, tiny_clip, tmp_path):
    from transformers import CLIPTextModel

    from sage_core.encoders import load_encoder

    cfg = tiny_cfg(method="des", lambda_esp=0.0, lambda_lsa=0.0, epochs=2, max_steps=10, eval_every=5, lr=2e-3)
    base_before = _tree_hash(tiny_clip)
    rec = Recorder()
    trainer = Trainer(cfg, out_dir=tmp_path / "run", callbacks=[rec], progress=False)
    result = trainer.fit()
    losses = [s.losses["loss"] for s in rec.steps]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    # the frozen encoder on disk and the base cache are untouched by training
    assert _tree_hash(tiny_clip) == base_before
    cache = Path(cfg.cache_dir)
    before = _file_hashes(cache)
    assert any("codebook" in name for name in before) and any("safe-" in name for name in before)
    Trainer(cfg.replace(max_steps=2), out_dir=tmp_path / "again", progress=False).fit()
    after = _file_hashes(cache)
    assert {k: after.get(k) for k in before} == before  # every cache file reused as it was
    assert after.keys() == before.keys()  # and nothing rebuilt under another name
    # the checkpoint is a diffusers-loadable text encoder giving the trained embeddings
    ckpt = result.final_checkpoint
    assert read_meta(ckpt)["step"] == 10 and read_meta(ckpt)["config"]["method"] == "des"
    prompts = ["a photo of a red cat", "a nude man on the beach"]
    live = trainer.encoder.embed(prompts)
    reloaded = load_encoder(ckpt, max_length=cfg.max_length).embed(prompts)
    assert torch.allclose(live, reloaded, atol=1e-6)
    model = CLIPTextModel.from_pretrained(ckpt / "text_encoder")
    ids = trainer.encoder.tokenize(prompts)["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids)[0], live, atol=1e-6)
    base = load_encoder(tiny_clip, max_length=cfg.max_length).embed(prompts)
    assert not torch.allclose(base, live, atol=1e-4)  # training did move the encoder
    assert rec.evals[-1].metrics["spread_ratio"] > 0 and "jaccard" in rec.evals[-1].metrics


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg(max_steps=6, eval_every=3, checkpoint_every=3, seed=7)
    full = Trainer(cfg, out_dir=tmp_path / "full", progress=False, evaluate=False).fit()
    half = Trainer(cfg.replace(max_steps=3), out_dir=tmp_path / "half", progress=False, evaluate=False).fit()
    assert read_meta(half.final_checkpoint)["step"] == 3
    resumed = Trainer(cfg, out_dir=tmp_path / "half", resume_from=half.final_checkpoint, progress=False,
                      evaluate=False).fit()
    assert resumed.step == 6
    a, b = _weights(full.final_checkpoint), _weights(resumed.final_checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_batches_give_the_full_batch_gradient(tiny_cfg, tiny_clip, tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_cfg(max_steps=2, eval_every=2)
    whole = Trainer(cfg, out_dir=tmp_path / "whole", progress=False, evaluate=False).fit()
    split = Trainer(cfg.replace(micro_batch_size=2), out_dir=tmp_path / "split", progress=False,
                    evaluate=False).fit()
    w0 = load_file(str(tiny_clip / "text_encoder" / "model.safetensors"))
    a, b = _weights(whole.final_checkpoint), _weights(split.final_checkpoint)
    # Adam amplifies float noise in near-zero gradients element-wise, so compare whole updates.
    da = torch.cat([(a[k] - w0[k]).flatten() for k in a])
    db = torch.cat([(b[k] - w0[k]).flatten() for k in a])
    assert (da - db).norm() / da.norm() < 1e-2
    assert whole.metrics["loss"] == pytest.approx(split.metrics["loss"], rel=1e-5)


def test_non_finite_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path):
    class Poison(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_step(self, info):
            if info.step == 2:  # corrupt the live weights after a good checkpoint at step 2
                with torch.no_grad():
                    next(self.trainer.encoder.model.parameters()).fill_(float("nan"))

    cfg = tiny_cfg(max_steps=6, eval_every=6, checkpoint_every=1)
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False, evaluate=False)
    poison = Poison(trainer)
    trainer.callbacks.append(poison)
    # step 2's checkpoint is written after on_step, so it holds NaN weights: it must be dropped
    # and the error must point at step 1's, whose weights gave a finite loss at step 2.
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3.*last good checkpoint .*step_000001"):
        trainer.fit()
    kept = list_checkpoints(tmp_path / "run")
    assert [read_meta(k)["step"] for k in kept] == [1]
    assert all(torch.isfinite(t).all() for t in _weights(kept[-1]).values())


def test_callback_can_stop_training_early(tiny_cfg, tmp_path):
    import os

    port_before = os.environ.get("MASTER_PORT")
    rec = Recorder(stop_at=2)
    res = Trainer(tiny_cfg(max_steps=6, eval_every=2), out_dir=tmp_path / "r", callbacks=[rec], progress=False,
                  evaluate=False).fit()
    assert res.stopped_early and res.step == 2 and len(rec.steps) == 2
    assert read_meta(res.final_checkpoint)["step"] == 2
    # the DeepSpeed variables were filled in for the init only: a child process started now must
    # not inherit a MASTER_PORT this process holds
    assert os.environ.get("MASTER_PORT") == port_before


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_stages_run_on_cpu_and_save_whole_weights(stage, tiny_cfg, tmp_path):
    from sage_core.encoders import load_encoder

    trainer = Trainer(tiny_cfg(max_steps=2, zero_stage=stage), out_dir=tmp_path / "z", progress=False,
                      evaluate=False)
    res = trainer.fit()
    assert res.step == 2 and read_meta(res.final_checkpoint)["exact_resume"] is False
    prompts = ["a photo of a red cat", "a nude man on the beach"]
    reloaded = load_encoder(res.final_checkpoint, max_length=16).embed(prompts)
    assert torch.allclose(trainer.encoder.embed(prompts), reloaded, atol=1e-5)


def test_csv_without_prompt_column_is_a_data_error(tiny_cfg, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(DataError, match="no 'prompt' column"):
        Trainer(tiny_cfg(safe_prompts=str(bad)), out_dir=tmp_path / "x", progress=False).fit()


def test_bf16_runs_under_autocast_with_fp32_weights(tiny_cfg, tmp_path):
    """CPU sibling of the GPU bf16 path: autocast forwards, fp32 master weights and checkpoints."""
    rec = Recorder()
    res = Trainer(tiny_cfg(precision="bf16", max_steps=2, eval_every=2), out_dir=tmp_path / "bf16", callbacks=[rec],
                  progress=False, evaluate=False).fit()
    weights = _weights(res.final_checkpoint)
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert read_meta(res.final_checkpoint)["exact_resume"] is True
    # at step 1 the trainable encoder still equals E0, so safe preservation is ~0 up to bf16 rounding
    assert rec.steps[0].losses["loss_sp"] < 1e-2
