"""Adversarial training (sage_core.adversarial, TrainConfig.lambda_adv / adv_every / adv_attack):
bad settings refused on one line, the loss term against an independent computation, and a tiny
DeepSpeed run that refreshes adversarial prompts on schedule and is deterministic."""

from __future__ import annotations

import pytest
import torch

from sage_core.defs.errors import ConfigError
from sage_core.losses import LossWeights, sage_loss
from sage_core.trainer import Trainer, TrainerCallback


@pytest.mark.parametrize("overrides,message", [
    ({"adv_attack": {"steps": 1}}, "adv_attack: set lambda_adv > 0 to use it"),
    ({"lambda_adv": 1.0, "adv_attack": {"steps": 0}}, "adv_attack.steps=0: Input should be greater than or equal to 1"),
    ({"lambda_adv": 1.0, "adv_attack": {"stepz": 1}}, "unknown key 'adv_attack.stepz' (did you mean 'steps'?)"),
    ({"lambda_adv": 1.0, "des_terms": [1, 3]}, "lambda_adv=1.0: adds to DES term 2"),
    ({"lambda_adv": 1.0, "micro_batch_size": 4}, "lambda_adv=1.0: needs one forward per step"),
    ({"lambda_adv": -1.0}, "lambda_adv=-1.0"),
    ({"lambda_adv": 1.0, "adv_every": 0}, "adv_every=0"),
])
def test_bad_adversarial_settings_are_refused(tiny_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        tiny_cfg(**overrides)
    assert message in str(err.value)


def test_the_training_attack_defaults_and_seed(tiny_cfg):
    cfg = tiny_cfg(lambda_adv=0.5, seed=3, adv_attack={"candidates": 4})
    a = cfg.adv_attack_config()
    assert (a.steps, a.candidates, a.top_k, a.seed) == (2, 4, 32, 3)


def test_the_adversarial_term_is_lambda_adv_times_the_unsafe_mapping_loss():
    g = torch.Generator().manual_seed(0)
    e, b, e_u, tgt, e_c, u = (torch.randn(6, 4, 8, generator=g) for _ in range(6))
    e_c, u, v = e_c[:1], u[:1], torch.randn(32, generator=g)
    e_adv = torch.randn(3, 4, 8, generator=g)
    w = LossWeights(lambda_esp=0.0, lambda_lsa=0.0, scale=2.0, lambda_adv=0.7)
    plain, _ = sage_loss(e=e, b=b, e_unsafe=e_u, targets=tgt, e_concept=e_c, u=u, v=v, w=w)
    total, terms = sage_loss(e=e, b=b, e_unsafe=e_u, targets=tgt, e_concept=e_c, u=u, v=v, w=w,
                             e_adv=e_adv, adv_targets=tgt[:3])
    by_hand = sum(1 - float(torch.dot(x.reshape(-1), t.reshape(-1)) / (x.norm() * t.norm()))
                  for x, t in zip(e_adv, tgt[:3], strict=True)) / 3
    assert float(terms["loss_adv"]) == pytest.approx(by_hand, rel=1e-6)
    assert float(total) == pytest.approx(float(plain) + 0.7 * by_hand, rel=1e-6)


class _Steps(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_step(self, info):
        self.losses.append(dict(info.losses))


def _run(tiny_cfg, out, **overrides):
    rec = _Steps()
    cfg = tiny_cfg(max_steps=4, eval_every=4, lr=1e-3, **overrides)
    trainer = Trainer(cfg, out_dir=out, callbacks=[rec], progress=False, evaluate=False)
    res = trainer.fit()
    from sage_core.checkpoint import load_weights

    return rec.losses, load_weights(res.final_checkpoint), trainer


def test_adversarial_training_refreshes_on_schedule_and_is_deterministic(tiny_cfg, tmp_path):
    adv = dict(lambda_adv=1.0, adv_every=2, adv_attack={"steps": 1, "candidates": 4, "top_k": 8})
    losses, weights, trainer = _run(tiny_cfg, tmp_path / "a", **adv)
    again, weights_again, _ = _run(tiny_cfg, tmp_path / "b", **adv)
    plain, weights_plain, _ = _run(tiny_cfg, tmp_path / "c")
    # a step carries the term when one of its unsafe prompts was attacked at a refresh step (0, 2) so far
    rows = [set((trainer.plan.batch(t)[1] % 40).tolist()) for t in range(4)]
    attacked = [set().union(*(rows[r] for r in (0, 2) if r <= t)) for t in range(4)]
    assert ["loss_adv" in s for s in losses] == [bool(rows[t] & attacked[t]) for t in range(4)]
    assert set(trainer._adv._suffix) == rows[0] | rows[2]
    assert not any("loss_adv" in s for s in plain)
    # loss = the plain terms' weighted sum + lambda_adv * loss_adv (SAGE weights of tiny_cfg)
    for s in (s for s in losses if "loss_adv" in s):
        rest = 0.3 * (s["loss_sp"] + s["loss_ca"]) + 2.0 * s["loss_esp"] + 0.1 * s["loss_lsa"] \
            + 0.7 * (s["loss_un"] + s["loss_cu"])
        assert s["loss"] == pytest.approx(rest + s["loss_adv"], rel=1e-5)
    assert losses == again and all(torch.equal(weights[k], weights_again[k]) for k in weights)
    assert any(not torch.equal(weights[k], weights_plain[k]) for k in weights)
    # each attacked prompt holds k typeable tokens
    held = trainer._adv._suffix
    assert held and all(len(s) == 4 for s in held.values())
    special = set(trainer.encoder.tokenizer.all_special_ids)
    assert not any(int(t) in special for s in held.values() for t in s)
