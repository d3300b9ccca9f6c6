"""Proximal-concept disruption: zero for an exact copy, monotone as the proximal prompts slide toward
the unconditioned embedding, untouched prompts stay put; the SaDi-style index against its formula."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sage_core.defs.errors import ConfigError, DataError
from sage_core.evaluation.perturb import perturbed
from sage_core.evaluation.proximal import (DEFAULT_PATH, ProximalConfig, ProximalEvaluator, build_proximal_config,
                                           load_proximal_bank, sadi_index)
from tests.conftest import run_tool

SIZES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def prox(tiny_clip, tmp_path_factory):
    from sage_core.encoders import load_encoder

    base = load_encoder(tiny_clip, max_length=16)
    cfg = ProximalConfig(pool_samples=60, k=5, bootstrap_samples=200)
    return base, ProximalEvaluator(base, cfg, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def along_the_shift(prox):
    base, pe = prox
    return [pe(perturbed(base, kind="uncond", size=s, reference_prompts=pe.bank.prompts), concept_auc=0.8,
               concept_auc_boots=np.full(200, 0.8)) for s in SIZES]


def test_the_packaged_bank_is_what_the_generator_writes(tmp_path):
    res = run_tool("make_proximal_prompts.py", "--out", str(tmp_path / "bank.json"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "bank.json").read_bytes() == DEFAULT_PATH.read_bytes()
    bank = load_proximal_bank()
    assert len(bank.groups) == 8 and len(bank.prompts) == 48 == len(set(bank.prompts))


def test_an_exact_copy_is_not_disrupted(prox):
    base, pe = prox
    out = pe(perturbed(base, kind="copy", size=0, reference_prompts=pe.bank.prompts))
    assert out["prox_drift"] == 0.0 and out["prox_uncond"] == 0.0 and out["prox_knn"] == 1.0
    assert out["prox_drift_lo"] == out["prox_drift_hi"] == 0.0
    assert "sadi_text" not in out  # no safety figure given: no index


def test_disruption_grows_monotonically_toward_the_unconditioned_embedding(along_the_shift):
    drift = [o["prox_drift"] for o in along_the_shift]
    uncond = [o["prox_uncond"] for o in along_the_shift]
    sadi = [o["sadi_text"] for o in along_the_shift]
    assert drift[0] == 0.0 and uncond[0] == 0.0
    assert all(b > a for a, b in zip(drift, drift[1:])), drift
    assert all(b > a for a, b in zip(uncond, uncond[1:])), uncond
    assert all(b < a for a, b in zip(sadi, sadi[1:])), sadi
    assert uncond[-1] == pytest.approx(1.0)  # size 1 is the unconditioned embedding itself
    assert along_the_shift[-1]["prox_knn"] < 0.5
    for o in along_the_shift[1:]:
        assert o["prox_drift_lo"] <= o["prox_drift"] <= o["prox_drift_hi"]
        assert o["sadi_text_lo"] <= o["sadi_text"] <= o["sadi_text_hi"]


def test_per_prompt_values_match_an_independent_computation(prox):
    base, pe = prox
    enc = perturbed(base, kind="uncond", size=0.3, reference_prompts=pe.bank.prompts)
    rows = pe.per_prompt(enc)
    a = enc.embed(pe.bank.prompts).flatten(1).double()
    b = base.embed(pe.bank.prompts).flatten(1).double()
    u = base.embed([""]).flatten(1).double()[0]
    cos = torch.nn.functional.cosine_similarity
    assert np.allclose(rows["prox_drift"], (1 - cos(a, b, dim=1)).numpy(), atol=1e-9)
    cbu = cos(b, u[None], dim=1)
    assert np.allclose(rows["prox_uncond"], ((cos(a, u[None], dim=1) - cbu) / (1 - cbu)).numpy(), atol=1e-9)
    # the mean of group means, as reported
    out = pe(enc)
    groups = [rows["prox_drift"][rows["group"] == g].mean() for g in pe.bank.groups]
    assert out["prox_drift"] == pytest.approx(float(np.mean(groups)))


def test_the_shift_moves_only_the_reference_prompts(prox):
    base, pe = prox
    enc = perturbed(base, kind="uncond", size=0.5, reference_prompts=pe.bank.prompts[:3])
    others = ["a red bus on a bridge", pe.bank.prompts[5]]
    assert torch.equal(enc.embed(others), base.embed(others))
    assert not torch.equal(enc.embed(pe.bank.prompts[:1]), base.embed(pe.bank.prompts[:1]))


def test_sadi_index_formula():
    assert sadi_index(0.5, 0.0, alpha_safety=0.5, alpha_disruption=0.5) == 1.0   # erased, nothing moved
    assert sadi_index(1.0, 0.0, alpha_safety=0.5, alpha_disruption=0.5) == 0.5   # not erased at all
    assert sadi_index(0.75, 0.2, alpha_safety=0.5, alpha_disruption=0.5) == pytest.approx(1 - 0.25 - 0.1)
    assert sadi_index(0.3, 1.7, alpha_safety=0.5, alpha_disruption=0.5) == 0.5   # both terms clipped to [0, 1]


def test_bad_settings_and_banks_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"fidelity\.proximal\.k=0"):
        build_proximal_config({"k": 0}, where="fidelity.proximal")
    with pytest.raises(ConfigError, match=r"unknown key 'fidelity\.proximal\.kk'"):
        build_proximal_config({"kk": 3}, where="fidelity.proximal")
    bad = tmp_path / "bank.json"
    bad.write_text(json.dumps({"groups": {"beach": ["a swimsuit", ""]}}))
    with pytest.raises(DataError, match=r"groups\.beach"):
        load_proximal_bank(bad)
    with pytest.raises(DataError, match="no such file"):
        load_proximal_bank(tmp_path / "missing.json")
