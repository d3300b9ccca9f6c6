"""Erasure depth (sage_core.evaluation.attack_depth): the metrics against independent computations,
and the sensitivity rules of issue 25 on the tiny CLIP and (slow) on the real MiniLM: the base is
recovered at once (depth 0), an encoder that reads every prompt as the empty prompt is never
recovered (depth 1), an exact copy equals the base, and depth is monotone in the budget. And its
specificity: damage to every other prompt is not read as erasure (depth 0), an erasure keyed on the
exact attack prompts is seen through by the first edit (depth 0 after the step-0 reading), and one
that holds under edits is measured exactly (depth = the share of safe targets below the threshold)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from sage_core.encoders import TextEncoder
from sage_core.evaluation.attack import AttackConfig, AttackResult
from sage_core.evaluation.attack_depth import AttackDepthEvaluator, depth_metrics

Pick = Callable[[tuple[int, ...]], int]


class _Pinned(torch.nn.Module):
    """A row whose real tokens ``pick`` maps to i >= 0 holds ``vectors[i]`` at every position (so any
    mean pooling gives ``vectors[i]`` back exactly); a row mapped to -1 goes through ``inner``."""

    def __init__(self, inner: torch.nn.Module, vectors: torch.Tensor, pick: Pick):
        super().__init__()
        self.inner, self.vectors, self.pick = inner, vectors, pick

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows = torch.tensor([self.pick(tuple(r[m.bool()].tolist())) for r, m in zip(input_ids, mask, strict=True)])
        pinned = self.vectors.to(torch.float32)[rows.clamp(min=0)][:, None].expand(*input_ids.shape, -1)
        if (rows >= 0).all():   # the inner encoder is not run at all (no gradient reaches the input)
            return pinned
        return torch.where((rows >= 0)[:, None, None], pinned, self.inner(input_ids, attention_mask))


@dataclasses.dataclass
class _PinnedEncoder(TextEncoder):
    vectors: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(1, 1))
    pick: Pick = lambda _row: 0

    @property
    def vector(self) -> torch.Tensor:
        return self.vectors[0]

    def module(self) -> torch.nn.Module:
        return _Pinned(super().module(), self.vectors, self.pick)


def _pinned(base: TextEncoder, vectors: torch.Tensor, pick: Pick) -> TextEncoder:
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TextEncoder)}
    return _PinnedEncoder(**fields, vectors=vectors, pick=pick)


def _empty(base: TextEncoder, pick: Pick = lambda _row: 0) -> TextEncoder:
    """Every prompt (every one ``pick`` maps to 0) reads as the empty prompt: each position holds the
    base's pooled embedding of ""."""
    return _pinned(base, base.embed_pooled([""]), pick)


def _holding(base: TextEncoder, prompts: list[str], *, span: int) -> Pick:
    """i where the row holds, in order, the first ``span`` real tokens of ``prompts[i]`` (what stays of
    it whatever tokens an attacker inserts, and after the attack's truncation to make room), else -1."""
    tok = base.tokenize(prompts)
    keys = [row[m.bool()].tolist()[:span] for row, m in zip(tok["input_ids"], tok["attention_mask"], strict=True)]
    assert len({tuple(k) for k in keys}) == len(keys)   # one prompt per key: the pick is unambiguous

    def holds(row: tuple[int, ...], key: list[int]) -> bool:
        it = iter(row)
        return all(t in it for t in key)   # key is a subsequence of row

    return lambda row: next((i for i, k in enumerate(keys) if holds(row, k)), -1)


def _copy(base: TextEncoder, prompts) -> TextEncoder:
    from sage_core.evaluation.perturb import perturbed

    return perturbed(base, kind="copy", size=0.0, reference_prompts=prompts)


# --- metrics of one run -----------------------------------------------------------------------
def test_depth_median_and_curve_by_hand():
    r = AttackResult(steps=np.array([0, 2, -1, 1, -1, 3]), budget=3, scores=np.zeros(6), adversarial=[""] * 6)
    m = depth_metrics(r, bootstrap_samples=0, seed=0)
    assert m["attack_depth"] == pytest.approx(2 / 6)
    assert m["attack_steps_median"] == 2.5            # median of 0, 2, 4, 1, 4, 3 (never = budget + 1)
    assert [m[f"attack_recovered_at_{t}"] for t in range(4)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6])
    assert "attack_depth_lo" not in m


def test_the_interval_has_the_binomial_width():
    """400 prompts, 120 held: the percentile interval is about p +- 1.96 sqrt(p(1-p)/n)."""
    steps = np.r_[np.full(120, -1), np.zeros(280, dtype=int)]
    m = depth_metrics(AttackResult(steps=steps, budget=2, scores=np.zeros(400), adversarial=[""] * 400),
                      bootstrap_samples=4000, seed=1)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 400)
    assert m["attack_depth_lo"] == pytest.approx(0.3 - half, abs=0.01)
    assert m["attack_depth_hi"] == pytest.approx(0.3 + half, abs=0.01)


def test_an_all_recovered_run_has_a_point_interval():
    m = depth_metrics(AttackResult(steps=np.zeros(10, dtype=int), budget=1, scores=np.zeros(10),
                                   adversarial=[""] * 10), bootstrap_samples=100, seed=0)
    assert (m["attack_depth"], m["attack_depth_lo"], m["attack_depth_hi"]) == (0.0, 0.0, 0.0)


# --- sensitivity rules ---------------------------------------------------------------------------
def _check_threshold_and_prompts(base, ev):
    """Every attack prompt is read as the concept by the base (independent embeddings)."""
    assert (ev.probe.scores(base.embed_pooled(ev.prompts)).numpy() > ev.threshold).all()


def _sensitivity(base, ev, damaged: TextEncoder):
    metrics = ev(base)
    assert metrics["attack_depth"] == 0.0 and metrics["attack_recovered_at_0"] == 1.0
    assert ev(_copy(base, ev.prompts)) == metrics
    empty = _empty(base)
    assert float(ev.probe.scores(empty.vector[None].double())[0]) <= ev.threshold
    m_empty = ev(empty)
    assert m_empty["attack_depth"] == 1.0 and m_empty["attack_depth_lo"] == 1.0
    assert all(m_empty[f"attack_recovered_at_{t}"] == 0.0 for t in range(ev.attack.steps + 1))
    # monotone in the budget: separate runs at budgets 1, 2 and the full one
    full = ev.attack
    depths = []
    for b in (1, 2, full.steps):
        ev.attack = full.model_copy(update={"steps": b})
        depths.append(ev(damaged)["attack_depth"])
    ev.attack = full
    assert depths[0] >= depths[1] >= depths[2]
    return depths


@pytest.fixture(scope="module")
def tiny_ev(tiny_clip, tmp_path_factory):
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig

    base = load_encoder(tiny_clip, max_length=16)
    cfg = EvalConfig(attack_samples=64, calibration_samples=400, bootstrap_samples=200)
    return base, AttackDepthEvaluator(base, cfg, AttackConfig(prompts=16, steps=4, candidates=8, top_k=16),
                                      cache_dir=tmp_path_factory.mktemp("cache"))


def _controls() -> list[str]:
    """The held-out safe control pool the tiny evaluator calibrates on (400, seed 0), drawn again."""
    from sage_core.data import load_prompts
    from sage_core.evaluation.probe import load_probe_bank
    from sage_core.evaluation.text import sample_prompts

    return sample_prompts(list(dict.fromkeys(load_prompts("sd-controls"))), 400, seed=0,
                          exclude=load_probe_bank().fit_prompts())


def test_tiny_threshold_and_attack_prompts(tiny_ev):
    base, ev = tiny_ev
    _check_threshold_and_prompts(base, ev)
    controls = _controls()
    scores = ev.probe.scores(base.embed_pooled(controls)).numpy()
    # the (k+1)-th largest score, k = ceil(5%): at most k above it, at least k + 1 at or above (ties)
    k = math.ceil(0.05 * len(controls))
    assert (scores > ev.threshold).sum() <= k < (scores >= ev.threshold).sum()
    assert ev.threshold in scores


def test_tiny_sensitivity(tiny_ev):
    from sage_core.evaluation.perturb import perturbed

    base, ev = tiny_ev
    depths = _sensitivity(base, ev, perturbed(base, kind="rotate", size=0.8, reference_prompts=ev.prompts))
    assert 0 < depths[-1] < 1   # the rotation lands in between


# --- specificity: damage elsewhere is not erasure; an erasure is read as deep as it holds ----------
def _span(base, ev) -> int:
    """Real tokens of an attack prompt that survive the attack's edit (start token and the words
    the truncation to ``max_length - n_tokens`` keeps)."""
    return base.max_length - ev.attack.n_tokens - 1


def _nearest_safe(base, ev) -> list[str]:
    """Each attack prompt's nearest safe control in base space (the erasure DES aims at)."""
    from sage_core.evaluation.perturb import nearest_targets

    controls = _controls()
    targets = nearest_targets(ev.prompts, ev.targets, controls, base.embed_pooled(controls))
    return [targets[p] for p in ev.prompts]


def test_damage_to_every_other_prompt_is_not_erasure(tiny_ev):
    """Every prompt but the attack prompts and their edits reads as the empty prompt (the controls,
    the attack prompts the base did not read as the concept, any other text): depth 0, and every
    attack metric equals the base's."""
    base, ev = tiny_ev
    keep = _holding(base, ev.prompts, span=_span(base, ev))
    damaged = _empty(base, lambda row: 0 if keep(row) < 0 else -1)
    controls = _controls()
    wrecked = damaged.embed_pooled(controls)
    # float32 outputs: each control now reads as the empty prompt up to float32 rounding
    torch.testing.assert_close(wrecked, damaged.vector.expand_as(wrecked), rtol=1e-6, atol=1e-6)
    assert (ev.probe.scores(base.embed_pooled(controls)).numpy() > ev.threshold).sum() > 0
    assert (ev.probe.scores(wrecked).numpy() > ev.threshold).sum() == 0   # the concept-like controls are gone
    metrics = ev(damaged)
    assert metrics == ev(base) and metrics["attack_depth"] == 0.0


def test_an_erasure_of_the_exact_prompts_is_seen_through_by_the_first_edit(tiny_ev):
    """Each attack prompt, matched by its exact tokens, reads as its nearest safe control
    (``perturbed(kind="toward")``): the unedited prompts look erased, and one round of edits brings
    every one back, since an edited prompt is no longer the prompt the lookup knows."""
    from sage_core.evaluation.perturb import perturbed

    base, ev = tiny_ev
    lookup = perturbed(base, kind="toward", size=1.0, reference_prompts=ev.prompts,
                       targets=dict(zip(ev.prompts, _nearest_safe(base, ev), strict=True)))
    m = ev(lookup)
    assert m["attack_recovered_at_0"] < 1.0
    assert m["attack_recovered_at_1"] == 1.0 and m["attack_depth"] == 0.0


@pytest.mark.parametrize("mode", ["tokens", "soft"])
def test_an_erasure_that_holds_under_edits_is_measured_exactly(tiny_ev, mode):
    """Each attack prompt, and any edit that keeps its tokens, reads as its nearest safe control
    (the base's pooled embedding): no budget brings back a prompt whose control the probe reads at or
    below the threshold, and every other one is recovered at step 0. So depth = the share of those
    controls, at every step, and its interval lies above the base's [0, 0]."""
    base, ev = tiny_ev
    vectors = base.embed_pooled(_nearest_safe(base, ev))
    deep = _pinned(base, vectors, _holding(base, ev.prompts, span=_span(base, ev)))
    scores = ev.probe.scores(vectors).numpy()
    # the encoder writes float32 (relative rounding ~1e-7): no score is near enough to flip
    assert np.abs(scores - ev.threshold).min() > 1e-5
    held = float((scores <= ev.threshold).mean())
    full = ev.attack
    ev.attack = full.model_copy(update={"mode": mode})
    try:
        m = ev(deep)
    finally:
        ev.attack = full
    assert 0 < held < 1 and m["attack_depth"] == held
    curve = [m[f"attack_recovered_at_{t}"] for t in range(full.steps + 1)]
    assert curve == pytest.approx([1 - held] * (full.steps + 1), abs=1e-12)
    assert m["attack_depth_lo"] > ev(base)["attack_depth_hi"] == 0.0


# --- the real MiniLM -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_ev(tmp_path_factory):
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig

    base = load_encoder("minilm", max_length=32)
    cfg = EvalConfig(attack_samples=32, calibration_samples=300, bootstrap_samples=200)
    return base, AttackDepthEvaluator(base, cfg, AttackConfig(prompts=12, steps=3, candidates=8, top_k=32),
                                      cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.slow
def test_minilm_sensitivity(minilm_ev):
    """A rotation by 1.2 rad of every token vector: partly recovered, the rest holds."""
    from sage_core.evaluation.perturb import perturbed

    base, ev = minilm_ev
    _check_threshold_and_prompts(base, ev)
    depths = _sensitivity(base, ev, perturbed(base, kind="rotate", size=1.2, reference_prompts=ev.prompts))
    assert 0 < depths[-1] < 1
