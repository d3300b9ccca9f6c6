"""Real sweeps (real Ray, DeepSpeed, Optuna, Parquet store) on a tiny CLIP and tiny prompt CSVs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_TEXT_EVAL
from tests.pareto_oracle import brute_rank_crowding, minimise
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

    outcome = sweeps.run(str(tiny_spec(tmp_path, train={"cache_dir": str(tmp_path / "cache")})), progress=False)
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
    # the base data was built, in the cache folder the spec names
    assert any((tmp_path / "cache").iterdir())
    st = sweep_status(str(tmp_path / "sweep"))
    assert st.trials == {"running": 0, "finished": 4, "pruned": 0, "failed": 0} and st.front


def _pareto_halving(points: list[list[float]], *, eta: int) -> list[bool]:
    """Which of the trials reaching a rung in this order go on, by the rule as documented: a trial
    goes on while fewer than ceil(n / eta) of the n trials recorded there so far are strictly ahead
    of it (a lower front, or the same front and a larger crowding distance). Brute force."""
    import math

    keeps = []
    for n in range(1, len(points) + 1):
        ranks, crowd = brute_rank_crowding(np.asarray(points[:n]))
        me = n - 1
        ahead = sum(1 for j in range(n) if ranks[j] < ranks[me] or (ranks[j] == ranks[me] and crowd[j] > crowd[me]))
        keeps.append(ahead < math.ceil(n / eta))
    return keeps


def test_optuna_multiobjective_sweep_with_pareto_scheduler(ray_local, tmp_path):
    import sweeps

    # One trial at a time, so trials reach the rung in the order they were created (their id's index).
    path = tiny_spec(tmp_path, space={"lambda_esp": {"uniform": [0.0, 4.0]}, "lambda_lsa": {"uniform": [0.0, 0.5]}},
                     search={"algorithm": "tpe", "num_samples": 6, "max_concurrent": 1, "seed": 1},
                     scheduler={"kind": "pareto_sh", "eta": 2}, fidelity={"text_every": 2, "rungs": [2]},
                     # graded objectives (asr_text/util_text saturate on the tiny model: all trials would tie)
                     objectives=[{"metric": "concept_auc", "mode": "min"}, {"metric": "util_sib", "mode": "max"}])
    outcome = sweeps.run(str(path), progress=False)
    assert outcome.state == "finished"
    rows = _rows(tmp_path / "sweep")
    # Tune names each trial's folder train_trial_<id>_<creation index>_<params>.
    index = {m[1]: int(m[2]) for d in (tmp_path / "sweep" / "ray" / "tune").iterdir()
             if (m := re.match(r"train_trial_([0-9a-f]+)_(\d+)_", d.name))}
    trials = sorted({r["trial_id"] for r in rows}, key=index.__getitem__)
    assert len(trials) == 6
    at_rung = {r["trial_id"]: r for r in rows if r["step"] == 2}
    # concept_auc is minimised, util_sib maximised: minimise (concept_auc, -util_sib)
    points = minimise([[at_rung[t]["concept_auc"], at_rung[t]["util_sib"]] for t in trials], [1, -1]).tolist()
    pruned = {t for t, keep in zip(trials, _pareto_halving(points, eta=2)) if not keep}
    assert 0 < len(pruned) < 6, points  # the seeded trials exercise both decisions
    expected = {(t, 2) for t in trials} | {(t, 4) for t in trials if t not in pruned}
    assert sorted((r["trial_id"], r["step"]) for r in rows) == sorted(expected)
    status = {(r["trial_id"], r["step"]): r["status"] for r in rows}
    for t in trials:
        assert status[(t, 2)] == ("pruned" if t in pruned else "running")
        if t not in pruned:
            assert status[(t, 4)] == "finished"
    assert outcome.counts["pruned"] == len(pruned) and outcome.counts["finished"] == 6 - len(pruned)
    assert all(0.0 <= r["lambda_esp"] <= 4.0 for r in rows)
