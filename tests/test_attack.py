"""The optimised attack (sage_core.evaluation.attack) on the tiny CLIP: bad input refused before any
work, the spliced sequences and the injected embeddings against independent constructions, seeded
determinism, and the prefix property behind the monotone success curve."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sage_core.defs.errors import ConfigError, ModelError
from sage_core.evaluation import attack as atk
from sage_core.evaluation.attack import AttackConfig, build_attack_config, run_attack

PROMPTS = ["a nude woman on the beach", "the naked man in a park", "portrait of a topless dancer",
           "a photo of a red cat", "an undressed couple in the kitchen", "a blue car"]


@pytest.fixture(scope="module")
def tiny(tiny_clip):
    """(base encoder, its pooled targets, a probe in its space)."""
    from sage_core.encoders import load_encoder
    from sage_core.evaluation.graded import Probe

    base = load_encoder(tiny_clip, max_length=16)
    targets = base.embed_pooled(PROMPTS)
    w = torch.nn.functional.normalize(targets[0] - targets[3], dim=0)
    return base, targets, Probe(weight=w, bias=0.0)


def _rotated(base, angle: float):
    from sage_core.evaluation.perturb import perturbed

    return perturbed(base, kind="rotate", size=angle, reference_prompts=PROMPTS)


# --- bad input: one line, before any work ---------------------------------------------------------
@pytest.mark.parametrize("field,value", [("steps", 0), ("steps", -3), ("candidates", 0), ("top_k", 0),
                                         ("n_tokens", 0), ("prompts", 0)])
def test_a_budget_of_zero_or_less_is_one_line_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        build_attack_config({field: value})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"attack.{field}={value}") and "greater than or equal to 1" in msg


def test_an_unknown_key_says_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown key 'attack.step' \(did you mean 'steps'\?\)"):
        build_attack_config({"step": 3})


def test_k_larger_than_the_sequence_is_refused(tiny):
    base, targets, probe = tiny
    room = base.max_length - 3
    run_attack(base, PROMPTS[:1], targets=targets[:1], probe=probe, threshold=-1e9,
               cfg=AttackConfig(n_tokens=room, steps=1, candidates=1))   # the largest k that fits
    with pytest.raises(ConfigError, match=rf"^attack.n_tokens={room + 1}: larger than the 16-token sequence "
                                          rf"allows; at most {room}"):
        run_attack(base, PROMPTS, targets=targets, probe=probe, threshold=0.0, cfg=AttackConfig(n_tokens=room + 1))


def test_an_encoder_without_a_tokenizer_is_refused_before_any_forward(tiny):
    base, targets, probe = tiny
    calls = []
    handle = base.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ModelError, match="has no tokenizer; the attack edits prompts token by token"):
            run_attack(dataclasses.replace(base, tokenizer=None), PROMPTS, targets=targets, probe=probe,
                       threshold=0.0, cfg=AttackConfig())
    finally:
        handle.remove()
    assert calls == []


def test_the_evaluator_refuses_bad_input_before_fitting_anything(tiny, tmp_path):
    from sage_core.evaluation.attack_depth import AttackDepthEvaluator

    base, _, _ = tiny
    with pytest.raises(ConfigError, match="attack.n_tokens=20"):
        AttackDepthEvaluator(base, attack=AttackConfig(n_tokens=20), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# --- the pieces against independent constructions --------------------------------------------------
@pytest.mark.parametrize("position", ["suffix", "prefix"])
def test_spliced_sequences_hold_the_prompt_tokens_and_the_k_tokens_in_place(tiny, position):
    base, _, _ = tiny
    tok = base.tokenizer
    cfg = AttackConfig(n_tokens=3, position=position)
    spl = atk._Splicer(base, PROMPTS, cfg)
    adv = torch.tensor([[5, 6, 7]] * len(PROMPTS))
    b = spl.batch(range(len(PROMPTS)), adv)
    for i, p in enumerate(PROMPTS):
        words = tok(p, add_special_tokens=False)["input_ids"][:base.max_length - 3 - 2]
        edit = words + [5, 6, 7] if position == "suffix" else [5, 6, 7] + words
        want = [tok.bos_token_id, *edit, tok.eos_token_id]
        assert b.ids[i, :len(want)].tolist() == want and int(b.mask[i].sum()) == len(want)
        assert b.ids[i, b.cols[b.rows == i]].tolist() == [5, 6, 7]


def test_injected_one_hot_embeddings_give_the_plain_forward(tiny):
    """The gradient path (one-hot @ embedding table, hooked in) computes the same outputs as the
    plain forward of the same token ids."""
    base, _, _ = tiny
    spl = atk._Splicer(base, PROMPTS, AttackConfig(n_tokens=2))
    adv = torch.tensor([[40 + i, 90 + i] for i in range(len(PROMPTS))])
    b = spl.batch(range(len(PROMPTS)), adv)
    emb = base.model.get_input_embeddings()
    one_hot = torch.nn.functional.one_hot(adv, emb.num_embeddings).float()
    with torch.no_grad():
        plain = atk._forward(base, b)
        with atk._inject(emb, b.rows, b.cols, (one_hot @ emb.weight).reshape(-1, emb.embedding_dim)):
            hooked = atk._forward(base, b)
    torch.testing.assert_close(hooked, plain, rtol=0, atol=1e-6)   # one float32 matmul vs a table lookup


def test_step_zero_is_the_unedited_prompt_as_the_evaluators_embed_it(tiny):
    base, targets, probe = tiny
    scores = probe.scores(base.embed_pooled(PROMPTS)).numpy()
    tau = float(np.median(scores))
    r = run_attack(base, PROMPTS, targets=targets, probe=probe, threshold=tau, cfg=AttackConfig(steps=1))
    assert ((r.steps == 0) == (scores > tau)).all()


def test_typed_tokens_only(tiny):
    base, _, _ = tiny
    ok = atk._allowed_tokens(base)
    special = base.tokenizer.all_special_ids
    assert not ok[special].any() and ok.sum() == base.model.get_input_embeddings().num_embeddings - len(set(special))


# --- determinism and the prefix property ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["tokens", "soft"])
def test_the_same_seed_gives_the_same_attack(tiny, mode):
    base, targets, probe = tiny
    aligned = _rotated(base, 0.8)
    cfg = AttackConfig(mode=mode, steps=3, candidates=4, top_k=8, seed=5)
    one, two = (run_attack(aligned, PROMPTS, targets=targets, probe=probe, threshold=1e9, cfg=cfg) for _ in range(2))
    assert one.adversarial == two.adversarial and (one.steps == two.steps).all()
    np.testing.assert_array_equal(one.scores, two.scores)
    if mode == "tokens":
        other = run_attack(aligned, PROMPTS, targets=targets, probe=probe, threshold=1e9,
                           cfg=cfg.model_copy(update={"seed": 6}))
        assert other.adversarial != one.adversarial


@pytest.mark.parametrize("mode", ["tokens", "soft"])
def test_a_smaller_budget_is_the_start_of_a_larger_one(tiny, mode):
    """Runs with budgets 1, 2 and 4 (independent runs) agree with the budget-4 run's own curve."""
    base, targets, probe = tiny
    aligned = _rotated(base, 0.8)
    tau = float(np.quantile(probe.scores(aligned.embed_pooled(PROMPTS)).numpy(), 0.3))
    cfg = AttackConfig(mode=mode, candidates=4, top_k=8, lr=0.5)
    runs = {b: run_attack(aligned, PROMPTS, targets=targets, probe=probe, threshold=tau,
                          cfg=cfg.model_copy(update={"steps": b})) for b in (1, 2, 4)}
    curve = runs[4].curve()
    assert (np.diff(curve) >= 0).all()
    for b in (1, 2):
        assert runs[b].recovered().mean() == curve[b]
        assert ((runs[b].steps == runs[4].steps) | ((runs[b].steps < 0) & (runs[4].steps > b))).all()


def test_the_token_search_lowers_the_attack_loss(tiny):
    """Greedy acceptance: the final tokens' loss is never above the initial one's, and the search
    moves on an encoder whose output depends on the tokens."""
    base, targets, probe = tiny
    aligned = _rotated(base, 0.8)
    cfg = AttackConfig(steps=4, candidates=8, top_k=16)
    spl = atk._Splicer(aligned, PROMPTS, cfg)
    obj = atk._Objective(targets, probe, 1e9, "base")
    init = torch.full((len(PROMPTS), 4), aligned.tokenizer("!", add_special_tokens=False)["input_ids"][0])
    search = atk._TokenSearch(aligned, spl, init.clone(), cfg)
    which = list(range(len(PROMPTS)))
    with torch.no_grad():
        before = obj.loss(atk._forward(aligned, spl.batch(which, init)), torch.tensor(which))
    for _ in range(4):
        search.step(which, obj)
    with torch.no_grad():
        after = obj.loss(atk._forward(aligned, spl.batch(which, search.adv)), torch.tensor(which))
    assert (after <= before + 1e-12).all() and (after < before - 1e-6).any()
