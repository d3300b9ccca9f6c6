"""Real sweeps (real Ray, DeepSpeed, Optuna, Parquet store) on a tiny CLIP and tiny prompt CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_TEXT_EVAL
from tests.tiny_models import make_tiny_clip_encoder, write_tiny_prompt_sets


def tiny_spec(root: Path, *, train: dict | None = None, **changes) -> Path:
    """A spec whose trials take seconds: tiny CLIP, 32 pairs, batch 8, 4 steps, text metrics every 2.
    ``train`` updates the TrainConfig overrides (e.g. longer runs); other keys replace spec keys."""
    enc = root / "enc"
    if not enc.exists():
        make_tiny_clip_encoder(enc)
    data = write_tiny_prompt_sets(root / "data")
    spec = {
        "name": "tiny",
        "train": {"encoder": str(enc), "max_length": 16, "batch_size": 8, "max_steps": 4, "local_k": 3,
                  "diag_samples": 16, "diag_k": 5, "lr": 1e-3, "concept_guidance_scale": None,
                  "concept_guidance_ratio": 0.8, "device": "cpu", "text_eval": TINY_TEXT_EVAL, **data},
        "space": {"lambda_esp": {"grid": [0.0, 2.0]}, "lambda_lsa": {"grid": [0.0, 0.1]}},
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "scheduler": {"kind": "fifo"},
        "objectives": [{"metric": "asr_text", "mode": "min"}, {"metric": "util_text", "mode": "max"}],
        "fidelity": {"text_every": 2},
        "storage": str(root / "sweep"),
        "max_failures": 1,
    }
    spec["train"].update(train or {})
    for key, value in changes.items():
        spec[key] = value
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _rows(storage: Path) -> list[dict]:
    from analysis.store import ResultStore

    return ResultStore(storage / "results").read().to_pylist()


def test_grid_sweep_writes_exactly_the_expected_rows(ray_local, tmp_path):
    import sweeps
    from sweeps.status import sweep_status

    outcome = sweeps.run(str(tiny_spec(tmp_path)), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 4
    rows = _rows(tmp_path / "sweep")
    keys = [(r["trial_id"], r["step"], r["fidelity"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8
    by_params = {(r["lambda_esp"], r["lambda_lsa"], r["step"]): r["status"] for r in rows}
    assert by_params == {(e, l, s): ("finished" if s == 4 else "running")
                         for e in (0.0, 2.0) for l in (0.0, 0.1) for s in (2, 4)}
    for r in rows:
        assert r["sweep_id"] == outcome.sweep_id and r["method"] == "sage" and r["local_k"] == 3
        assert 0.0 <= r["asr_text"] <= 1.0 and 0.0 <= r["util_text"] <= 1.0
        assert r["concept_guidance_scale"] > 0 and r["code_version"] and r["wall_s"] > 0
        assert r["checkpoint"] and Path(r["checkpoint"], "meta.json").is_file()
        assert json.loads(Path(r["checkpoint"], "meta.json").read_text())["step"] == r["step"]
    # the base data was built once, by the driver, under the sweep's storage
    assert any((tmp_path / "sweep" / "cache").iterdir())
    st = sweep_status(str(tmp_path / "sweep"))
    assert st.trials == {"running": 0, "finished": 4, "pruned": 0, "failed": 0} and st.front


def test_optuna_multiobjective_sweep_with_pareto_scheduler(ray_local, tmp_path):
    import sweeps

    path = tiny_spec(tmp_path, space={"lambda_esp": {"uniform": [0.0, 4.0]}, "lambda_lsa": {"uniform": [0.0, 0.5]}},
                     search={"algorithm": "tpe", "num_samples": 6, "max_concurrent": 2, "seed": 1},
                     scheduler={"kind": "pareto_sh", "eta": 2}, fidelity={"text_every": 2, "rungs": [2]})
    outcome = sweeps.run(str(path), progress=False)
    assert outcome.state == "finished"
    rows = _rows(tmp_path / "sweep")
    pruned = json.loads((tmp_path / "sweep" / "scheduler_state.json").read_text())["pruned"]
    trials = {r["trial_id"] for r in rows}
    assert len(trials) == 6
    expected = {(t, 2) for t in trials} | {(t, 4) for t in trials if t not in pruned}
    assert sorted((r["trial_id"], r["step"]) for r in rows) == sorted(expected)
    status = {(r["trial_id"], r["step"]): r["status"] for r in rows}
    for t in trials:
        assert status[(t, 2)] == ("pruned" if t in pruned else "running")
        if t not in pruned:
            assert status[(t, 4)] == "finished"
    assert outcome.counts["pruned"] == len(pruned) and outcome.counts["finished"] == 6 - len(pruned)
    assert all(0.0 <= r["lambda_esp"] <= 4.0 for r in rows)
