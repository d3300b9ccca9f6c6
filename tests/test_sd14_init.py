"""`sd14-init`: SD v1.4's text encoder shape and tokenizer, offline, trained with `--preset paper` on CPU.

The runs use the paper preset at a tiny batch (4 pairs, local_k 2) and the paper's 77 tokens at the
real width (768, 12 layers): ZeRO 0 and ZeRO 3 in fp32, exact resume, micro-batches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sage_core.checkpoint import load_weights, read_meta
from sage_core.trainer import Trainer, TrainerCallback
from tests.conftest import benign_prompts, unsafe_prompts, write_prompts

SD_IDS_A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]  # Stable Diffusion's tokenizer


def test_tokenizer_gives_stable_diffusions_ids(tmp_path):
    from sage_core.clip_init import sd14_tokenizer

    tok = sd14_tokenizer(tmp_path / "cache")
    assert tok("a photo of a cat")["input_ids"] == SD_IDS_A_PHOTO_OF_A_CAT
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    # SD pads with <|endoftext|> and keeps the end token when it truncates a long prompt
    padded = tok(["A  Photo of a CAT", "cat " * 100], padding="max_length", max_length=77, truncation=True)["input_ids"]
    assert padded[0] == SD_IDS_A_PHOTO_OF_A_CAT + [49407] * 70  # lower-cased, whitespace folded
    assert padded[1] == [49406] + [2368] * 75 + [49407]
    # the vocabulary files are written once into the cache folder and reused
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert files == ["merges.txt", "vocab.json"]
    assert sd14_tokenizer(tmp_path / "cache")("a photo of a cat")["input_ids"] == SD_IDS_A_PHOTO_OF_A_CAT


@pytest.fixture(scope="module")
def sd14():
    from sage_core.encoders import load_encoder

    return load_encoder("sd14-init")


def test_model_has_the_sd14_text_encoder_shape(sd14):
    enc = sd14
    c = enc.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act,
            c.max_position_embeddings, c.vocab_size) == (12, 768, 12, 3072, "quick_gelu", 77, 49408)
    assert enc.is_clip and enc.max_length == 77 and not enc.use_attention_mask
    # parameter count from the architecture: embeddings + 12 x (attention, 2 layer norms, MLP) + final norm
    h, f, v, p = 768, 3072, 49408, 77
    layer = 4 * (h * h + h) + 2 * 2 * h + (h * f + f) + (f * h + h)
    assert sum(t.numel() for t in enc.model.parameters()) == v * h + p * h + 12 * layer + 2 * h == 123_060_480
    emb = enc.embed(["a photo of a cat"])
    assert emb.shape == (1, 77, 768) and torch.isfinite(emb).all()


# ---------------------------------------------------------------------------------------------
class Losses(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step(self, info):
        self.steps.append(info.losses)


@pytest.fixture(scope="module")
def paper_cfg(tmp_path_factory):
    """``--preset paper --set encoder=sd14-init`` shrunk to 4 pairs a batch (one shared base cache)."""
    from sage_core.defs.config import load_config

    d = tmp_path_factory.mktemp("paper")
    data = {"safe_prompts": str(write_prompts(d / "safe.csv", benign_prompts(8))),
            "unsafe_prompts": str(write_prompts(d / "unsafe.csv", unsafe_prompts(8))),
            "diag_prompts": str(write_prompts(d / "diag.csv", benign_prompts(4, offset=60)))}

    def make(**overrides):
        values = dict(encoder="sd14-init", batch_size=4, local_k=2, max_pairs=8, max_steps=2, checkpoint_every=1,
                      diag_samples=4, diag_k=2, device="cpu", cache_dir=str(d / "cache"), **data)
        values.update(overrides)
        return load_config(preset="paper", overrides=values)

    return make


@pytest.fixture(scope="module")
def zero0_run(paper_cfg, tmp_path_factory):
    cfg = paper_cfg()
    losses = Losses()
    out = tmp_path_factory.mktemp("zero0")
    result = Trainer(cfg, out_dir=out, callbacks=[losses], progress=False, evaluate=False).fit()
    return cfg, result, losses.steps, out


def _cache_files(cfg) -> set[str]:
    return {str(p.relative_to(cfg.cache_dir)) for p in Path(cfg.cache_dir).rglob("*") if p.is_file()}


def test_paper_preset_trains_sd14_init_in_fp32(zero0_run):
    cfg, result, steps, out = zero0_run
    assert (cfg.precision, cfg.max_length, cfg.concept_guidance_scale, cfg.lambda_esp) == ("fp32", 77, 205.0, 2.0)
    assert result.step == 2 and len(steps) == 2
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in steps)
    # fp32 end to end: at step 1 the trainable encoder equals the frozen one whose outputs are cached,
    # so safe preservation is 0 up to float rounding (bf16 autocast leaves ~1e-3 here)
    assert abs(steps[0]["loss_sp"]) < 1e-6 and steps[1]["loss_sp"] > 1e-4
    weights = load_weights(result.final_checkpoint)
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert read_meta(result.final_checkpoint)["config"]["encoder"] == "sd14-init"


def test_resume_of_sd14_init_is_bit_identical(zero0_run, paper_cfg, tmp_path):
    from sage_core.encoders import load_encoder

    cfg, result, _, out = zero0_run
    first = out / "checkpoints" / "step_000001"
    cache_before = _cache_files(cfg)
    resumed = Trainer(cfg, out_dir=tmp_path / "resumed", resume_from=first, progress=False, evaluate=False).fit()
    assert resumed.step == 2 and read_meta(first)["exact_resume"] is True
    a, b = load_weights(result.final_checkpoint), load_weights(resumed.final_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the rebuilt frozen encoder has the same seeded weights: its base cache was reused, not rebuilt
    assert _cache_files(cfg) == cache_before
    # the checkpoint carries SD's tokenizer
    enc = load_encoder(resumed.final_checkpoint)
    assert enc.is_clip and enc.tokenize(["a photo of a cat"])["input_ids"][0, :7].tolist() == SD_IDS_A_PHOTO_OF_A_CAT


def test_zero3_with_micro_batches_matches_the_unsplit_zero0_run(zero0_run, paper_cfg, sd14, tmp_path):
    """ZeRO-3 partitions the weights and micro-batches of 2 accumulate the 4-pair batch at the
    embedding level: the run must follow the unsplit ZeRO-0 run (same step-1 loss, same updates)."""
    cfg, result, steps, _ = zero0_run
    losses = Losses()
    split = Trainer(paper_cfg(zero_stage=3, micro_batch_size=2, checkpoint_every=None), out_dir=tmp_path / "z3",
                    callbacks=[losses], progress=False, evaluate=False).fit()
    assert split.step == 2 and read_meta(split.final_checkpoint)["exact_resume"] is False
    assert losses.steps[0]["loss"] == pytest.approx(steps[0]["loss"], rel=1e-5)
    w0 = sd14.model.state_dict()  # the seeded initial weights both runs started from
    a, b = load_weights(result.final_checkpoint), load_weights(split.final_checkpoint)
    assert a.keys() == b.keys()
    # Adam turns float noise in near-zero gradients into whole steps element-wise: compare whole updates
    da = torch.cat([(a[k] - w0[k]).flatten() for k in a])
    db = torch.cat([(b[k] - w0[k]).flatten() for k in a])
    assert da.norm() > 0 and (da - db).norm() / da.norm() < 1e-2
