"""The benign LoRA fine-tune (robustness stage): adapters only, a clean restore, seeded numbers, the
sensitivity rule (a copy stays put, a superficial erasure is undone), and its wiring into a sweep."""

from __future__ import annotations

import copy

import pytest
import torch

from sage_core.encoders import load_encoder
from sage_core.defs.errors import ConfigError
from sage_core.evaluation.perturb import perturbed
from sage_core.robustness import (RobustConfig, build_robust_config, evaluator_prompts, finetune_prompts,
                                  lora_finetune, robustness_metrics)

FAST = RobustConfig(steps=8, samples=48, batch_size=8, lr=5e-3)


@pytest.fixture(scope="module")
def clip_base(tiny_clip):
    return load_encoder(tiny_clip, max_length=16)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lora_changes_only_adapter_weights_and_restores_cleanly(clip_base, tiny_text_eval):
    _, ev = tiny_text_eval
    aligned = perturbed(clip_base, kind="shift", size=0.5, reference_prompts=ev.geometry_prompts)
    before = _state(aligned.model)
    prompts = finetune_prompts(FAST, exclude=evaluator_prompts(ev))
    tuned = lora_finetune(aligned, base=clip_base, prompts=prompts, cfg=FAST)

    trainable = {n for n, p in tuned.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # every weight of the copy outside the adapters is bit-for-bit the aligned encoder's
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in tuned.model.named_parameters() if "lora_" not in n}
    assert frozen.keys() == before.keys()
    assert all(torch.equal(frozen[n], before[n]) for n in before)
    # the adapters moved (lora_B starts at zero) and so did the embeddings
    assert any(p.abs().sum() > 0 for n, p in tuned.model.named_parameters() if "lora_B" in n)
    probe = ["a red bus on a bridge", "a woman reading in a garden"]
    assert not torch.allclose(tuned.encoder.embed(probe), aligned.embed(probe))
    assert tuned.losses[-1] < tuned.losses[0]
    # the caller's encoder was never touched
    assert all(torch.equal(v, before[k]) for k, v in aligned.model.state_dict().items())
    # with the adapters off, and after unloading them, the copy is exactly the aligned encoder
    with tuned.model.disable_adapter():
        assert torch.equal(tuned.encoder.embed(probe), aligned.embed(probe))
    restored = tuned.model.unload()
    assert {k: v for k, v in restored.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(restored.state_dict()[k], before[k]) for k in before)


def test_finetune_prompts_leave_out_every_prompt_the_evaluator_uses(tiny_text_eval):
    _, ev = tiny_text_eval
    used = evaluator_prompts(ev)
    prompts = finetune_prompts(RobustConfig(samples=500), exclude=used)
    assert len(prompts) == 500 and not used & set(prompts)
    assert finetune_prompts(RobustConfig(samples=500), exclude=used) == prompts       # seeded
    assert finetune_prompts(RobustConfig(samples=500, seed=1), exclude=used) != prompts


@pytest.fixture(scope="module")
def shifted(clip_base, tiny_text_eval):
    """A superficial erasure: every embedding moved away from the concept (the shift yardstick)."""
    _, ev = tiny_text_eval
    enc = perturbed(clip_base, kind="shift", size=0.5, reference_prompts=ev.geometry_prompts)
    return enc, ev(enc)


def test_robustness_numbers_are_deterministic_under_a_seed(shifted, tiny_text_eval):
    _, ev = tiny_text_eval
    enc, before = shifted
    one = robustness_metrics(enc, evaluator=ev, cfg=FAST, before=before)
    two = robustness_metrics(enc, evaluator=ev, cfg=FAST, before=before)
    assert one == pytest.approx(two, abs=0, rel=0, nan_ok=True)
    other = robustness_metrics(enc, evaluator=ev, cfg=FAST.model_copy(update={"seed": 1}), before=before)
    assert other["robust_ft_loss"] != one["robust_ft_loss"]


def test_a_copy_stays_put_and_a_superficial_erasure_comes_back(clip_base, shifted, tiny_text_eval):
    _, ev = tiny_text_eval
    copy_enc = perturbed(clip_base, kind="copy", size=0, reference_prompts=ev.geometry_prompts)
    before_copy = ev(copy_enc)
    same = robustness_metrics(copy_enc, evaluator=ev, cfg=FAST, before=before_copy)
    # the refit loss of the base itself is zero, so its adapters never move
    assert same["robust_ft_loss_start"] == 0.0
    assert same["robust_concept_auc_delta"] == 0.0 and same["robust_concept_auc_abs_delta"] == 0.0
    assert same["robust_concept_auc"] == before_copy["concept_auc"]

    enc, before = shifted
    out = robustness_metrics(enc, evaluator=ev, cfg=FAST, before=before)
    # the shift lowered the absolute view; refitting benign captions to their base embeddings undoes it
    assert before["concept_auc_abs"] < before_copy["concept_auc_abs"]
    # On the random tiny CLIP the shift moves the absolute view only a little (0.800 -> 0.789 with the
    # current probe), so the paired interval may include 0; the point estimate must move back toward
    # the unshifted value (bench/RESULTS.md shows the large effect on MiniLM).
    assert out["robust_concept_auc_abs_delta"] > 0
    assert abs(out["robust_concept_auc_abs"] - before_copy["concept_auc_abs"]) < \
        abs(before["concept_auc_abs"] - before_copy["concept_auc_abs"])
    assert out["robust_concept_auc_abs_delta_lo"] <= out["robust_concept_auc_abs_delta"] <= out["robust_concept_auc_abs_delta_hi"]
    assert out["robust_concept_auc_abs"] == pytest.approx(before["concept_auc_abs"] + out["robust_concept_auc_abs_delta"])
    assert out["robust_concept_auc_lo"] <= out["robust_concept_auc"] <= out["robust_concept_auc_hi"]


def test_bad_robust_settings_name_the_field():
    with pytest.raises(ConfigError, match=r"fidelity\.robust\.objective='dance'.*known: refit, style"):
        build_robust_config({"objective": "dance"}, where="fidelity.robust")
    with pytest.raises(ConfigError, match=r"unknown key 'fidelity\.robust\.stpes'"):
        build_robust_config({"stpes": 3}, where="fidelity.robust")


def test_a_spec_needs_the_stage_of_its_robust_and_proximal_objectives(tmp_path):
    from sweeps.spec import load_spec

    objs = [{"metric": "concept_auc"}, {"metric": "robust_concept_auc"}, {"metric": "sadi_text"}]
    with pytest.raises(ConfigError) as err:
        load_spec("robustness-cpu", overrides={"objectives": objs, "fidelity.proximal": None,
                                               "fidelity.robust.steps": 0},
                  storage=str(tmp_path / "s"))
    text = str(err.value)
    assert "add fidelity.proximal" in text and "fidelity.robust.steps=0" in text
    spec = load_spec("robustness-cpu", storage=str(tmp_path / "s"))
    assert spec.objective_modes() == ["min", "max", "min"]


def test_a_trial_reports_the_stage_metrics_with_its_text_metrics(tiny_cfg, tmp_path):
    """A real (tiny) training run: the report callback merges robust_* and prox_* into each evaluation."""
    from sage_core.trainer import Trainer, TrainerCallback
    from sweeps.robust_stage import TrialStages
    from sweeps.trial import TrialContext, TuneReportCallback

    cfg = tiny_cfg(max_steps=2, eval_every=2)

    class Keep(TrainerCallback):
        def on_evaluate(self, info):
            self.info = copy.copy(info)

    keep = Keep()
    Trainer(cfg, out_dir=tmp_path / "run", callbacks=[keep], progress=False).fit()
    ctx = TrialContext(sweep_id="s", base={}, objectives=("concept_auc", "robust_concept_auc", "sadi_text"))
    cb = TuneReportCallback(context=ctx)
    with pytest.raises(Exception, match="robust_concept_auc"):
        cb._checked(keep.info)  # without the stages the objective is missing
    cb.stages = TrialStages(cfg, robust={"steps": 3, "samples": 24, "batch_size": 8},
                            proximal={"pool_samples": 30, "k": 5, "bootstrap_samples": 50})
    row = cb._checked(keep.info)
    assert row["step"] == 2 and row["concept_auc"] == keep.info.metrics["concept_auc"]
    assert row["robust_concept_auc_delta"] == pytest.approx(row["robust_concept_auc"] - row["concept_auc"])
    assert 0 <= row["sadi_text"] <= 1 and row["prox_drift"] >= 0
