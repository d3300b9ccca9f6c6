"""`make gpu-check` (bench/gpu_check.py, its parts in bench/gpu_parts.py) in its tiny CPU mode: every
part runs, the table and JSON carry the numbers, and a failing part is reported with its reason while
the next part still runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _gpu_check(*args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    # A hang guard only: the script's own part limits scale with the machine's measured load.
    return subprocess.run([sys.executable, str(SCRIPT), "--tiny", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _tiny_clip_step_flops(*, seqs: int, length: int, hidden: int = 32, mlp: int = 37, layers: int = 2) -> int:
    """Matmul FLOPs of forward + backward of the tests' tiny CLIP: per token q, k, v, o (4 h^2) and the
    MLP (2 h f) multiply-adds, per sequence Q K^T and A V (2 L^2 h); backward costs twice the forward."""
    forward = 2 * (length * (4 * hidden * hidden + 2 * hidden * mlp) + 2 * length * length * hidden) * layers
    return 3 * forward * seqs


def test_tiny_mode_runs_every_part_and_writes_the_numbers(tmp_path):
    out = tmp_path / "gpu_check.json"
    res = _gpu_check("--out", str(out), "--work", str(tmp_path / "work"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())
    parts = doc["parts"]
    assert doc["tiny"] is True and list(parts) == ["train_step", "image_gen", "nudenet", "sweep", "attack"]
    assert all(p["status"] == "ok" for p in parts.values()), {n: p.get("why") for n, p in parts.items()}
    for name in parts:  # the table names every part
        assert any(line.startswith(name) and " ok " in line for line in res.stdout.splitlines()), name
    assert "5/5 parts ran" in res.stdout
    assert doc["load_factor"] >= 1.0

    train = parts["train_step"]
    for precision in ("fp32", "bf16"):
        r = train[precision]
        assert r["precision"] == precision and r["s_per_step"] > 0 and r["peak_memory_gib"] > 0
        # FLOPs counted by FlopCounterMode = the tiny CLIP's matmuls on 2B+1 sequences, forward + backward
        assert r["flops_unsplit"] == _tiny_clip_step_flops(seqs=2 * 4 + 1, length=16)
        assert 0 < r["ratio_to_bound"] and r["bound_tflops"] > 0
    assert train["bf16_speedup"] == train["fp32"]["s_per_step"] / train["bf16"]["s_per_step"]

    image = parts["image_gen"]
    assert image["images"] == image["batch"] == 2 and image["images_per_s"] > 0 and image["tflops_per_image"] > 0
    pngs = sorted(Path(image["images_dir"]).rglob("*.png"))
    assert len(pngs) == 2
    nude = parts["nudenet"]
    assert nude["images"] == 2 and "image_gen" in nude["source"] and nude["images_per_s"] > 0

    sweep = parts["sweep"]
    assert sweep["trials"] == 4 and sweep["state"] == "finished" and sweep["max_concurrent"] == 4
    assert sweep["sum_trial_s"] > 0 and sweep["wall_over_sum"] == sweep["wall_s"] / sweep["sum_trial_s"]

    attack = parts["attack"]
    _check_attack_part(attack, work=tmp_path / "work")


def _check_attack_part(attack: dict, *, work: Path) -> None:
    """The attack part's numbers against a fresh evaluator on the same tiny CLIP (its own cache): the
    same attack prompts and threshold, the base at depth 0 exactly and recovered at step 0, an exact
    copy equal to it, and the timed run at the default budget."""
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig
    from sage_core.evaluation.attack import AttackConfig
    from sage_core.evaluation.attack_depth import AttackDepthEvaluator

    defaults = AttackConfig()
    assert attack["attack"] == defaults.model_dump(mode="json") and attack["full_budget_steps"] == defaults.steps
    assert attack["base_depth"] == 0.0 and attack["base_recovered_at_0"] == 1.0
    assert attack["copy_equals_base"] is True and attack["copy_depth"] == attack["base_depth"]
    assert attack["met"] is True and attack["attack_s"] > 0 and attack["build_s"] > 0
    ev = AttackDepthEvaluator(load_encoder(attack["encoder"], max_length=16), EvalConfig(), defaults,
                              cache_dir=work / "fresh-cache")
    assert attack["prompts"] == len(ev.prompts) <= defaults.prompts
    assert attack["threshold"] == ev.threshold
    assert f"{len(ev.prompts)} prompts x {defaults.steps} steps x {defaults.candidates} candidates" in attack["summary"]


def test_a_failing_part_is_reported_and_the_next_part_still_runs(tmp_path):
    work = tmp_path / "work"
    (work / "images").mkdir(parents=True)
    (work / "images" / "broken.png").write_bytes(b"not a png at all")  # NudeNet cannot read it
    out = tmp_path / "gpu_check.json"
    res = _gpu_check("--parts", "nudenet", "train_step", "--out", str(out), "--work", str(work))
    assert res.returncode == 1, res.stdout[-3000:]
    parts = json.loads(out.read_text())["parts"]
    assert parts["nudenet"]["status"] == "failed" and "Error" in parts["nudenet"]["why"]
    assert Path(parts["nudenet"]["log"]).is_file()
    assert parts["train_step"]["status"] == "ok" and parts["train_step"]["fp32"]["s_per_step"] > 0
    assert f"[nudenet] failed: {parts['nudenet']['why']}" in res.stdout
    assert "1/2 parts ran (nudenet failed)" in res.stdout


def test_a_part_that_runs_out_of_time_names_load_as_the_likely_cause(tmp_path, monkeypatch):
    """A limit cut by the whole check's deadline (1 s here) ends the part and says why, with the load."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    monkeypatch.setattr(gpu_check, "LIMITS", {**gpu_check.LIMITS, "train_step": (1, 1)})
    res = gpu_check.run_parts(["train_step"], tiny=True, work=tmp_path, factor=1.0)["train_step"]
    assert res["status"] == "failed" and res["why"].startswith("timed out after 1 s")
    assert "a busy machine is the likely cause" in res["why"] and "load average" in res["why"]


def test_load_factor_grows_with_the_calibration_time(monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    monkeypatch.setattr(gpu_check, "calibration_s", lambda: 3 * gpu_check.CALIBRATION_REFERENCE_S)
    assert gpu_check.load_factor() == pytest.approx(3.0)
    monkeypatch.setattr(gpu_check, "calibration_s", lambda: 0.5 * gpu_check.CALIBRATION_REFERENCE_S)
    assert gpu_check.load_factor() == 1.0  # never shorter than the idle limits
