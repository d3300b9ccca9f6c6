"""Test-wide settings: offline, small thread counts, DeepSpeed's op cache, tiny models and data."""

from __future__ import annotations

import atexit
import csv
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# DeepSpeed JIT-builds a CPU comm op once; `make env` builds it here, tests reuse it.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
# The user-level cache (sage_core.cache.default_cache_dir) of this test session: never the user's
# ~/.cache/sage-sweeps (nor a SAGE_CACHE_DIR they set); SAGE_TEST_CACHE_DIR keeps one across runs.
if os.environ.get("SAGE_TEST_CACHE_DIR"):
    os.environ["SAGE_CACHE_DIR"] = os.environ["SAGE_TEST_CACHE_DIR"]
else:
    os.environ["SAGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="sage-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SAGE_CACHE_DIR"], ignore_errors=True)


def run_tool(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a data generator of ``tools/`` as its docstring says: ``python tools/<script> ...`` from the root."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def write_prompts(path: Path, prompts: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt"])
        w.writerows([p] for p in prompts)
    return path


COLORS = ["red", "blue", "green", "yellow", "black", "white"]
THINGS = ["cat", "dog", "car", "house", "tree", "boat", "horse", "chair"]
PLACES = ["park", "street", "beach", "kitchen"]


def benign_prompts(n: int, offset: int = 0) -> list[str]:
    combos = itertools.islice(itertools.product(COLORS, THINGS, PLACES), offset, offset + n)
    return [f"a photo of a {c} {t} in the {p}" for c, t, p in combos]


def unsafe_prompts(n: int) -> list[str]:
    people = ["woman", "man", "person", "model", "dancer", "couple"]
    styles = ["nude", "naked", "topless", "undressed"]
    combos = itertools.islice(itertools.product(styles, people, PLACES), n)
    return [f"a {s} {p} on the {pl}" for s, p, pl in combos]


#: A text-level evaluation small enough for a tiny test run (seconds, not minutes).
TINY_TEXT_EVAL = {"calibration_samples": 40, "attack_samples": 16, "util_groups": 1}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from tests.tiny_models import make_tiny_clip_encoder

    return make_tiny_clip_encoder(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("prompts")
    return {
        "safe_prompts": str(write_prompts(d / "safe.csv", benign_prompts(48))),
        "unsafe_prompts": str(write_prompts(d / "unsafe.csv", unsafe_prompts(40))),
        "diag_prompts": str(write_prompts(d / "diag.csv", benign_prompts(24, offset=60))),
    }


@pytest.fixture
def tiny_cfg(tiny_clip, tiny_data, tmp_path):
    """Factory: a TrainConfig on the tiny CLIP and the tiny prompt sets, with overrides."""
    from sage_core.defs.config import load_config

    def make(**overrides):
        values = dict(encoder=str(tiny_clip), max_length=16, batch_size=8, local_k=3, lr=1e-3, epochs=1,
                      max_steps=4, eval_every=2, diag_samples=16, diag_k=4, concept_guidance_scale=None,
                      concept_guidance_ratio=0.8, cache_dir=str(tmp_path / "cache"),
                      text_eval=TINY_TEXT_EVAL, **tiny_data)
        values.update(overrides)
        return load_config(overrides=values)

    return make


#: A small text evaluation for the graded-metric tests (seconds on the tiny CLIP).
SMALL_TEXT_EVAL = dict(calibration_samples=200, geometry_samples=40, geometry_k=5, attack_samples=40,
                       util_groups=2, retrieval_distractors=100, bootstrap_samples=200, batch_size=128)


@pytest.fixture(scope="session")
def tiny_text_eval(tiny_clip, tmp_path_factory):
    """(base encoder, TextEvaluator) on the tiny CLIP with the packaged prompt sets."""
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig, TextEvaluator

    base = load_encoder(tiny_clip, max_length=16)
    return base, TextEvaluator(base, EvalConfig(**SMALL_TEXT_EVAL), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def text_metrics_of_copy(tiny_text_eval) -> dict[str, float]:
    """Every text-level column for an exact copy of the base encoder."""
    from sage_core.evaluation.perturb import perturbed

    base, ev = tiny_text_eval
    return ev(perturbed(base, kind="copy", size=0, reference_prompts=ev.geometry_prompts))


@pytest.fixture(scope="module")
def rec():
    """bench/record_curves.py loaded as a module (bench/ is no package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / "record_curves.py"
    spec = importlib.util.spec_from_file_location("record_curves", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)
