"""Erasure depth (sage_core.evaluation.attack_depth): the metrics against independent computations,
and the sensitivity rules of issue 25 on the tiny CLIP and (slow) on the real MiniLM: the base is
recovered at once (depth 0), an encoder that reads every prompt as the empty prompt is never
recovered (depth 1), an exact copy equals the base, and depth is monotone in the budget."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sage_core.encoders import TextEncoder
from sage_core.evaluation.attack import AttackConfig, AttackResult
from sage_core.evaluation.attack_depth import AttackDepthEvaluator, depth_metrics


class _Empty(torch.nn.Module):
    def __init__(self, vector: torch.Tensor):
        super().__init__()
        self.vector = vector

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.vector.to(torch.float32).expand(*input_ids.shape, -1)


@dataclasses.dataclass
class _EmptyEncoder(TextEncoder):
    """Every prompt reads as the empty prompt: each position holds the base's pooled embedding of ""."""

    vector: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(1))

    def module(self) -> torch.nn.Module:
        return _Empty(self.vector)


def _empty(base: TextEncoder) -> TextEncoder:
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TextEncoder)}
    return _EmptyEncoder(**fields, vector=base.embed_pooled([""])[0])


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


def test_tiny_threshold_and_attack_prompts(tiny_ev):
    from sage_core.data import load_prompts
    from sage_core.evaluation.probe import load_probe_bank
    from sage_core.evaluation.text import sample_prompts

    base, ev = tiny_ev
    _check_threshold_and_prompts(base, ev)
    controls = sample_prompts(list(dict.fromkeys(load_prompts("sd-controls"))), 400, seed=0,
                              exclude=load_probe_bank().fit_prompts())
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
