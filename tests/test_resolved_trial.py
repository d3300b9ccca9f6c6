"""Each trial is resolved once on the driver: the store callback builds one TrainConfig per trial
(counted on the class), not one per result row, and every row carries that trial's values."""

from __future__ import annotations

import pickle
import random

import pytest

from analysis.store import ResultStore
from sage_core.defs.config import TrainConfig

TRIALS, EVERY, TOTAL = 3, 10, 40
BASE = {"max_steps": TOTAL, "local_k": 7, "batch_size": 32}
VARIANTS = {"des": {"method": "des", "lambda_esp": 0.0, "lambda_lsa": 0.0}}


@pytest.fixture
def constructions(monkeypatch):
    """How many TrainConfig objects were built (a counter on the class)."""
    count = {"n": 0}
    original = TrainConfig.__init__

    def counting(self, **values):
        count["n"] += 1
        original(self, **values)

    monkeypatch.setattr(TrainConfig, "__init__", counting)
    return count


def _trials():
    from ray.tune.experiment import Trial

    configs = [{"lambda_esp": 0.5}, {"lambda_esp": 1.5, "lambda_lsa": 0.2}, {"variant": "des"}]
    return [Trial("train_trial", config=c, trial_id=f"t{i}", stub=True) for i, c in enumerate(configs)]


def test_store_callback_builds_one_config_per_trial_and_rows_carry_its_values(tmp_path, constructions):
    from sweeps.store_callback import StoreCallback

    cb = StoreCallback(results_root=str(tmp_path / "results"), sweep_id="s1", base=BASE, variants=VARIANTS,
                       code_version="test")
    trials = _trials()
    rng = random.Random(0)
    for i, trial in enumerate(trials):
        cb.on_trial_start(iteration=i, trials=trials, trial=trial)
    assert constructions["n"] == TRIALS
    for step in range(EVERY, TOTAL + 1, EVERY):
        for trial in trials:
            cb.on_trial_result(iteration=step, trials=trials, trial=trial,
                               result={"step": step, "total_steps": TOTAL, "final": float(step == TOTAL),
                                       "concept_auc": rng.random(), "concept_guidance_scale": 123.0})
    cb.on_experiment_end(trials=trials)
    assert constructions["n"] == TRIALS  # 12 result rows, still one TrainConfig per trial
    rows = {(r["trial_id"], r["step"]): r for r in ResultStore(tmp_path / "results").read().to_pylist()}
    assert len(rows) == TRIALS * (TOTAL // EVERY)
    # Expected values, written out by hand: base < variant < sampled params < TrainConfig defaults.
    expected = {"t0": {"lambda_esp": 0.5, "lambda_lsa": 0.1, "method": "sage"},
                "t1": {"lambda_esp": 1.5, "lambda_lsa": 0.2, "method": "sage"},
                "t2": {"lambda_esp": 0.0, "lambda_lsa": 0.0, "method": "des", "variant": "des"}}
    for (tid, step), row in rows.items():
        assert {k: row.get(k) for k in expected[tid]} == expected[tid]
        assert row["local_k"] == 7 and row["batch_size"] == 32 and row["max_steps"] == TOTAL
        assert row["des_terms"] == "1,2,3" and "cache_dir" not in row
        assert row["concept_guidance_scale"] == 123.0  # what the trainer reported it used
        assert row["status"] == ("finished" if step == TOTAL else "running")
    assert "variant" not in rows[("t0", EVERY)] or rows[("t0", EVERY)]["variant"] is None


def test_resolved_trials_are_read_only_and_not_pickled_with_the_callback(tmp_path, constructions):
    from sweeps.resolved_trial import resolve_trial
    from sweeps.store_callback import StoreCallback

    resolved = resolve_trial("t0", {"lambda_esp": 0.5}, base=BASE, variants=VARIANTS)
    assert resolved.config.lambda_esp == 0.5 and resolved.columns["lambda_esp"] == 0.5
    with pytest.raises(TypeError):
        resolved.columns["lambda_esp"] = 9.0  # type: ignore[index]
    cb = StoreCallback(results_root=str(tmp_path / "results"), sweep_id="s1", base=BASE, variants=VARIANTS)
    trial = _trials()[0]
    first = cb.resolved(trial)
    assert cb.resolved(trial) is first and constructions["n"] == 2
    # tuner.pkl holds the callback: it pickles; the restored one resolves the trial again, once.
    restored = pickle.loads(pickle.dumps(cb))
    assert restored.resolved(trial).columns == first.columns and constructions["n"] == 3
