"""The trainer's outputs pinned to values recorded from the code before it was split into stages.

``tests/pins/trainer_pin.json`` was written by ``record()`` below on the single-function trainer
(commit 70a09fa): per-step losses, evaluation metrics, which checkpoints stay on disk, the log, the
weight updates, and the batch plan (or the refusal) for a grid of batch shapes. The staged trainer
must reproduce them. Regenerate only when a behaviour change is intended:
``.venv/bin/python -c "from tests.test_trainer_pin import record; record()"``.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from pathlib import Path

import pytest

from tests import conftest  # noqa: F401 - record() under the thread settings pytest runs with

PIN = Path(__file__).parent / "pins" / "trainer_pin.json"

#: name -> (TrainConfig overrides on the tiny setup, evaluate?, stop at this eval step or None)
SCENARIOS: dict[str, tuple[dict, bool, int | None]] = {
    # SAGE with the text evaluator: losses, metrics, checkpoints at eval steps.
    "sage_eval": ({}, True, None),
    # Two epochs ending in a partial batch (48 pairs, batch 10: last batch 8), accumulated in 2 micro-batches.
    "partial_accumulated": ({"batch_size": 10, "micro_batch_size": 5, "max_steps": None, "epochs": 2}, False, None),
    # DES with checkpoints between evaluations, keep 2, and a callback stopping the run at step 4.
    "des_stopped": ({"method": "des", "lambda_esp": 0.0, "lambda_lsa": 0.0, "max_steps": 7, "eval_every": 4,
                     "checkpoint_every": 3, "keep_checkpoints": 1, "lr": 2e-3}, False, 4),
}


def _tiny_setup(root: Path) -> tuple[Path, dict[str, str]]:
    from tests.conftest import benign_prompts, unsafe_prompts, write_prompts
    from tests.tiny_models import make_tiny_clip_encoder

    clip = make_tiny_clip_encoder(root / "tiny_clip")
    (root / "prompts").mkdir()
    data = {"safe_prompts": str(write_prompts(root / "prompts" / "safe.csv", benign_prompts(48))),
            "unsafe_prompts": str(write_prompts(root / "prompts" / "unsafe.csv", unsafe_prompts(40))),
            "diag_prompts": str(write_prompts(root / "prompts" / "diag.csv", benign_prompts(24, offset=60)))}
    return clip, data


def _config(clip: Path, data: dict[str, str], cache: Path, overrides: dict):
    from sage_core.config import load_config
    from tests.conftest import TINY_TEXT_EVAL

    values = dict(encoder=str(clip), max_length=16, batch_size=8, local_k=3, lr=1e-3, epochs=1, max_steps=4,
                  eval_every=2, diag_samples=16, diag_k=4, concept_guidance_scale=None, concept_guidance_ratio=0.8,
                  cache_dir=str(cache), text_eval=TINY_TEXT_EVAL, seed=5, **data)
    values.update(overrides)
    return load_config(overrides=values)


def _update_stats(ckpt: Path, clip: Path) -> dict[str, list[float]]:
    """Per weight tensor: (sum of the update, sum of its absolute values) against the base weights."""
    from safetensors.torch import load_file

    from sage_core.checkpoint import load_weights

    w0 = load_file(str(clip / "text_encoder" / "model.safetensors"))
    w = load_weights(ckpt)
    return {k: [float((w[k] - w0[k]).double().sum()), float((w[k] - w0[k]).double().abs().sum())]
            for k in sorted(w)}


def observe(name: str, root: Path, clip: Path, data: dict[str, str]) -> dict:
    """Run one scenario and return everything the pin compares."""
    from sage_core.checkpoint import list_checkpoints, read_meta
    from sage_core.trainer import Trainer, TrainerCallback

    overrides, evaluate, stop_at = SCENARIOS[name]

    class Record(TrainerCallback):
        def __init__(self):
            self.steps, self.evals, self.ckpts = [], [], []

        def on_step(self, info):
            self.steps.append({"step": info.step, "epoch": info.epoch, "total": info.total_steps,
                               "losses": info.losses})

        def on_evaluate(self, info):
            self.evals.append({"step": info.step, "metrics": info.metrics,
                               "checkpoint": info.checkpoint.name if info.checkpoint else None})
            return stop_at is not None and info.step >= stop_at

        def on_checkpoint(self, path, step):
            self.ckpts.append([path.name, step])

    cfg = _config(clip, data, root / "cache", overrides)
    rec = Record()
    out = root / name
    res = Trainer(cfg, out_dir=out, callbacks=[rec], progress=False, evaluate=evaluate).fit()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"steps": rec.steps, "evals": rec.evals, "on_checkpoint": rec.ckpts, "log": log,
            "result": {"step": res.step, "stopped_early": res.stopped_early, "metrics": res.metrics,
                       "final_checkpoint": res.final_checkpoint.name, "scale": res.concept_guidance_scale},
            "kept": [[p.name, read_meta(p)["step"], read_meta(p)["epoch"]] for p in list_checkpoints(out)],
            "final_update": _update_stats(res.final_checkpoint, clip)}


#: Batch shapes for the plan pin: (pairs, batch_size, micro_batch_size, workers, max_steps, regularizers)
PLAN_GRID = list(itertools.product(
    (48, 50, 43, 41, 33), (8, 10, 16), (None, 2), (1, 2, 4), (None, 2),
    ("sage_k3", "sage_k7", "esp_only", "none", "no_term1")))

_REGULARIZERS = {"sage_k3": {"local_k": 3}, "sage_k7": {"local_k": 7},
                 "esp_only": {"lambda_lsa": 0.0, "local_k": 9}, "none": {"lambda_lsa": 0.0, "lambda_esp": 0.0},
                 "no_term1": {"lambda_lsa": 0.0, "lambda_esp": 0.0, "des_terms": [2, 3]}}


def plan_config(*, batch: int, micro: int | None, max_steps: int | None, regularizers: str):
    from sage_core.config import load_config

    return load_config(overrides={"batch_size": batch, "micro_batch_size": micro, "max_steps": max_steps,
                                  "epochs": 2, **_REGULARIZERS[regularizers]})


def _old_plan(pairs: int, batch: int, micro: int | None, world: int, max_steps: int | None, reg: str) -> list:
    """The plan as the single-function trainer made it: ``_plan`` then ``_micro_plan``."""
    from sage_core.errors import ConfigError
    from sage_core.trainer import Trainer

    trainer = Trainer(plan_config(batch=batch, micro=micro, max_steps=max_steps, regularizers=reg), out_dir="unused")
    try:
        per_epoch, total = trainer._plan(pairs)
        micro_size, accumulation = trainer._micro_plan(pairs, world, reaches_last_batch=total >= per_epoch)
    except ConfigError as e:
        return ["error", str(e)]
    return ["ok", per_epoch, total, micro_size, accumulation]


def record() -> None:
    """Write the pin from the code as it is now (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip, data = _tiny_setup(root)
        runs = {name: observe(name, root, clip, data) for name in SCENARIOS}
    plans = [[list(case), _old_plan(*case)] for case in PLAN_GRID]
    PIN.parent.mkdir(exist_ok=True)
    lines = ",\n  ".join(json.dumps(p) for p in plans)  # one line per case: readable diffs
    PIN.write_text(f'{{"plans": [\n  {lines}\n ],\n "runs": {json.dumps(runs, sort_keys=True)}\n}}\n',
                   encoding="utf-8")


# --------------------------------------------------------------------------------------------------
#: Rank statistics of a 32-d model's neighbours: one-ulp changes (thread count, CPU) reorder near-ties.
_RANKING = re.compile(r"\.(jaccard\w*|distortion_spearman)$")


def _assert_close(got, want, path: str = "") -> None:
    """Same structure; floats within float32 noise of the recorded ones (the run is deterministic)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), path
        for k in want:
            _assert_close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and _RANKING.search(path):
        assert isinstance(got, float), path  # counts over near-ties: float noise flips them
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), path
    else:
        assert got == want, path


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(PIN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pin")
    return root, *_tiny_setup(root)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_training_reproduces_the_recorded_run(name, pinned, setup):
    root, clip, data = setup
    got = json.loads(json.dumps(observe(name, root, clip, data)))
    want = pinned["runs"][name]
    update = got.pop("final_update")
    _assert_close(got, {k: v for k, v in want.items() if k != "final_update"})
    # Weight updates: each tensor's summed update within 1e-4 of its summed magnitude.
    assert sorted(update) == sorted(want["final_update"])
    for k, (total, magnitude) in want["final_update"].items():
        assert update[k][1] == pytest.approx(magnitude, rel=1e-4), k
        assert abs(update[k][0] - total) <= 1e-4 * magnitude + 1e-9, k


def _same_refusal(new: str, old: str, *, batch: int, pairs: int) -> bool:
    """The new message names the shortfall the old one named (the two rules are now one message)."""
    if "must be a multiple" in old:
        return new == old
    last = pairs % batch
    if not new.startswith(f"batch_size={batch}: the last batch of each epoch has {last} pairs ({pairs} pairs in all), "
                          "fewer than "):
        return False
    split = re.search(r"fewer than (\d+) worker\(s\) x (\d+) micro-batch\(es\)", old)
    if split:
        return f"{split[1]} worker(s) x {split[2]} micro-batch(es)" in new
    need = int(re.search(r"local_k \+ 1 = (\d+)", old)[1])  # the old message said local_k + 1 for ESP's 2 too
    return f"local_k + 1 = {need} (LSA" in new or (need == 2 and "2 (ESP spread)" in new)


def test_batch_plans_match_the_recorded_ones(pinned):
    from sage_core.batch_plan import plan_batches
    from sage_core.errors import ConfigError

    assert len(pinned["plans"]) == len(PLAN_GRID)
    for (pairs, batch, micro, world, max_steps, reg), want in pinned["plans"]:
        cfg = plan_config(batch=batch, micro=micro, max_steps=max_steps, regularizers=reg)
        case = (pairs, batch, micro, world, max_steps, reg)
        try:
            plan = plan_batches(cfg, pairs=pairs, world=world)
        except ConfigError as e:
            assert want[0] == "error", (case, str(e))
            assert _same_refusal(str(e), want[1], batch=batch, pairs=pairs), (case, str(e), want[1])
            continue
        assert want == ["ok", plan.per_epoch, plan.total, plan.micro, plan.accumulation], case
