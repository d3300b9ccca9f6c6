"""Each loss term against values worked out by hand on 2-D toy embeddings."""

import math

import numpy as np
import pytest
import torch

from sage_core import losses as L

T = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


def test_safe_preservation_hand_value():
    # cos = 1 and 1/sqrt2  ->  mean(0, 1 - 0.70711)
    assert L.safe_preservation_loss(T([[1, 0], [0, 1]]), T([[1, 0], [1, 1]])).item() == pytest.approx(
        (1 - 1 / math.sqrt(2)) / 2)


def test_concept_augmentation_hand_value():
    # e + 1*v = [1,1], [0,2]; against b = [1,0], [0,1]: cos 1/sqrt2 and 1
    got = L.concept_augmentation_loss(T([[1, 0], [0, 1]]), T([[1, 0], [0, 1]]), T([[0, 1]]), 1.0)
    assert got.item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2)


def test_unsafe_mapping_uses_farthest_minus_scaled_direction():
    targets = L.unsafe_targets(T([[1, 1]]), T([[0, 1]]), 2.0)
    assert targets.tolist() == [[1, -1]]
    assert L.unsafe_mapping_loss(T([[1, 0]]), targets).item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_concept_unconditional_hand_value():
    assert L.concept_unconditional_loss(T([[1, 0]]), T([[-1, 0]])).item() == pytest.approx(2.0)


def test_spread_hand_value_and_identity():
    z = T([[1, 0], [0, 1], [-1, 0]])  # mu = (0, 1/3): sum |z - mu|^2 = 8/3, / (B-1) = 4/3
    assert L.spread(z).item() == pytest.approx(4 / 3)
    mu2 = (1 / 3) ** 2
    assert L.spread(z).item() == pytest.approx(3 / 2 * (1 - mu2))
    # unit-normalised first: scaling rows changes nothing
    assert L.spread(z * T([[5], [0.1], [7]])).item() == pytest.approx(4 / 3)


def test_esp_hinge_zero_when_preserved_positive_when_contracted():
    b = T([[1, 0], [0, 1], [-1, 0]])
    assert L.esp_loss(b.clone(), b).item() == 0
    expanded = T([[1, 0], [0, 1], [-1, 0.01]])  # spread >= base: free
    assert L.esp_loss(expanded, T([[1, 0], [1, 1], [0, 1]])).item() == 0
    contracted = T([[1, 0], [1, 0.1], [1, -0.1]])
    expected = L.spread(b).item() - L.spread(contracted).item()
    assert expected > 0.5
    assert L.esp_loss(contracted, b).item() == pytest.approx(expected)


def _lsa_by_hand(e, b, v, alpha, k):
    e, b, v = (np.asarray(x, dtype=float) for x in (e, b, v))
    et = e + alpha * v
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    s, s0 = unit(et) @ unit(et).T, unit(b) @ unit(b).T
    xs, ys = [], []
    for i in range(len(b)):
        order = [j for j in np.argsort(-s0[i], kind="stable") if j != i][:k]
        xs += [s[i, j] for j in order]
        ys += [s0[i, j] for j in order]
    x, y = np.array(xs), np.array(ys)
    x = (x - x.mean()) / (x.std(ddof=1) + 1e-8)
    y = (y - y.mean()) / (y.std(ddof=1) + 1e-8)
    return 1 - float((x * y).mean())


def test_lsa_identical_geometry_is_zero_up_to_the_official_estimator_offset():
    # The official r = mean(x^ y^) with unbiased stds equals Pearson * (|P|-1)/|P|, so identical
    # geometry gives 1 - r = 1/|P| (6 rows x k=2 -> |P| = 12), and any change only adds to it.
    b = torch.randn(6, 5, dtype=torch.float64)
    zero_v = torch.zeros(1, 5, dtype=torch.float64)
    same = L.lsa_loss(b.clone(), b, zero_v, alpha=0.0, k=2).item()
    assert same == pytest.approx(1 / 12, abs=1e-6)
    assert 1 - L.lsa_correlation(b, b, zero_v, alpha=0.0, k=2).item() * 12 / 11 == pytest.approx(0.0, abs=1e-6)
    moved = L.lsa_loss(b + 0.5 * torch.randn(6, 5, dtype=torch.float64), b, zero_v, alpha=0.0, k=2).item()
    assert moved > same


def test_lsa_matches_hand_computation_on_four_prompts():
    b = [[1, 0], [0.9, 0.3], [0, 1], [-0.5, 1]]
    e = [[1, 0.2], [0.2, 1], [0.1, 1], [-1, 0.4]]
    v = [[0, 1]]
    got = L.lsa_loss(T(e), T(b), T(v), alpha=0.5, k=2).item()
    assert got == pytest.approx(_lsa_by_hand(e, b, v, 0.5, 2), abs=1e-6)
    assert got > 0.05  # the geometry did change


def test_lsa_needs_k_plus_one_prompts():
    with pytest.raises(ValueError, match="local_k=3"):
        L.lsa_loss(T([[1, 0], [0, 1], [1, 1]]), T([[1, 0], [0, 1], [1, 1]]), T([[0, 1]]), alpha=1.0, k=3)


def test_total_loss_is_the_weighted_sum_and_des_drops_regularizers():
    g = torch.Generator().manual_seed(0)
    e, b, eu, t = (torch.randn(5, 4, 3, generator=g, dtype=torch.float64) for _ in range(4))
    ec, u = torch.randn(1, 4, 3, generator=g, dtype=torch.float64), torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    c = torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    v = c / c.norm()
    w = L.LossWeights(lambda_safe=0.3, lambda_esp=2.0, lambda_lsa=0.1, local_k=2, alpha=1.0, scale=3.0)
    total, terms = L.sage_loss(e=e, b=b, e_unsafe=eu, targets=t, e_concept=ec, u=u, v=v, w=w)
    expected = (0.3 * (terms["loss_sp"] + terms["loss_ca"]) + 2.0 * terms["loss_esp"] + 0.1 * terms["loss_lsa"]
                + 0.7 * (terms["loss_un"] + terms["loss_cu"]))
    assert total.item() == pytest.approx(expected.item())
    des = L.LossWeights(lambda_safe=0.3, lambda_esp=0.0, lambda_lsa=0.0, scale=3.0)
    _, des_terms = L.sage_loss(e=e, b=b, e_unsafe=eu, targets=t, e_concept=ec, u=u, v=v, w=des)
    assert "loss_esp" not in des_terms and "loss_lsa" not in des_terms
    only2 = L.LossWeights(lambda_esp=0.0, lambda_lsa=0.0, des_terms=(2,), scale=3.0)
    tot2, t2 = L.sage_loss(e=e, b=b, e_unsafe=eu, targets=t, e_concept=ec, u=u, v=v, w=only2)
    assert set(t2) == {"loss_un", "loss"} and tot2.item() == pytest.approx(0.7 * t2["loss_un"].item())


def test_gradients_flow_only_into_the_trainable_side():
    e = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)  # a leaf that must get no gradient
    v = torch.nn.functional.normalize(torch.randn(1, 6, dtype=torch.float64), dim=1)
    loss = L.esp_loss(e, b) + L.lsa_loss(e, b, v, alpha=1.0, k=2) + L.safe_preservation_loss(e, b.detach())
    loss.backward()
    assert e.grad is not None and e.grad.abs().sum() > 0
    assert b.grad is None or b.grad.abs().sum() == 0


def test_loss_weights_defaults_are_trainconfigs_and_from_config_maps_every_field():
    from sage_core.defs.config import TrainConfig

    cfg = TrainConfig()
    w = L.LossWeights()
    assert (w.lambda_safe, w.lambda_esp, w.lambda_lsa, w.local_k, w.alpha, w.scale, w.des_terms, w.lambda_adv) == (
        cfg.lambda_safe, cfg.lambda_esp, cfg.lambda_lsa, cfg.local_k, cfg.alpha, cfg.concept_guidance_scale,
        cfg.des_terms, cfg.lambda_adv)
    odd = TrainConfig(lambda_safe=0.4, lambda_esp=1.5, lambda_lsa=0.2, local_k=7, alpha=0.5, des_terms=(1, 2),
                      lambda_adv=0.3, concept_guidance_scale=None, concept_guidance_ratio=0.5)
    calls = []
    got = L.LossWeights.from_config(odd, mean_safe_norm=lambda: calls.append(1) or 8.0)
    assert got == L.LossWeights(lambda_safe=0.4, lambda_esp=1.5, lambda_lsa=0.2, local_k=7, alpha=0.5, scale=4.0,
                                des_terms=(1, 2), lambda_adv=0.3)
    # an absolute scale is taken as written, without computing the norm
    assert L.LossWeights.from_config(cfg, mean_safe_norm=lambda: calls.append(2) or 8.0).scale == 205.0
    assert calls == [1]
