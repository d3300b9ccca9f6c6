"""Experiment tracking from the spec: a real tiny sweep (real Ray), read back with the real MLflow
client from the sweep's local sqlite store and with TensorBoard's own event reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_sweep_run import tiny_spec


def _store_rows(storage: Path) -> list[dict]:
    from analysis.store import ResultStore

    return ResultStore(storage / "results").read().to_pylist()


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory):
    """One tiny 2-trial sweep with tracking.kind=mlflow given as a `--set` override, Pareto
    successive halving at step 2 on util_sib, one trial at a time: the lambda_esp=0 trial arrives
    after the better lambda_esp=2 one and is pruned there (ESP keeps sibling differences)."""
    import ray

    import sweeps

    root = tmp_path_factory.mktemp("tracked")
    path = tiny_spec(root, space={"lambda_esp": {"grid": [2.0, 0.0]}},
                     search={"algorithm": "grid", "max_concurrent": 1}, objectives=[{"metric": "util_sib"}],
                     scheduler={"kind": "pareto_sh", "eta": 2}, fidelity={"text_every": 2, "rungs": [2]})
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        outcome = sweeps.run(str(path), overrides={"tracking.kind": "mlflow"}, progress=False)
    finally:
        ray.shutdown()
    assert outcome.state == "finished"
    return outcome, root / "sweep"


def _last_status(rows: list[dict]) -> dict[str, str]:
    last: dict[str, dict] = {}
    for r in rows:
        if r["trial_id"] not in last or r["step"] > last[r["trial_id"]]["step"]:
            last[r["trial_id"]] = r
    return {t: r["status"] for t, r in last.items()}


def test_mlflow_runs_hold_config_metrics_tags_and_checkpoints(tracked_sweep):
    from mlflow.artifacts import load_dict
    from mlflow.tracking import MlflowClient

    outcome, storage = tracked_sweep
    rows = _store_rows(storage)
    status = _last_status(rows)
    assert sorted(status.values()) == ["finished", "pruned"]

    client = MlflowClient(tracking_uri=f"sqlite:///{storage.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_trial = {r.data.tags["sage.trial_id"]: r for r in runs}
    assert sorted(by_trial) == sorted(status) and len(runs) == len(status)  # one run per trial
    for trial_id, run in by_trial.items():
        mine = sorted((r for r in rows if r["trial_id"] == trial_id), key=lambda r: r["step"])
        tags = run.data.tags
        assert tags["sage.sweep_id"] == outcome.sweep_id
        assert tags["sage.status"] == status[trial_id]
        assert run.info.status == "FINISHED"
        # the resolved TrainConfig, not only the sampled values
        params = run.data.params
        for key in ("lambda_esp", "lambda_lsa", "lr", "batch_size", "local_k", "max_steps"):
            assert float(params[key]) == mine[0][key], key
        assert params["encoder"] == mine[0]["encoder"] and params["precision"] == mine[0]["precision"]
        # every reported metric at its training step, as the results store holds it
        for metric in ("asr_text", "util_text", "spread_ratio", "loss"):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
            assert history == [(r["step"], pytest.approx(r[metric], rel=1e-9)) for r in mine], metric
        # the checkpoint of every reported step, by reference
        refs = load_dict(f"{run.info.artifact_uri}/sage/checkpoints.json")
        assert refs == {str(r["step"]): r["checkpoint"] for r in mine}
        assert tags["sage.checkpoint"] == mine[-1]["checkpoint"] and Path(tags["sage.checkpoint"]).is_dir()
    # artifacts stay inside the sweep folder
    assert Path(experiment.artifact_location.removeprefix("file://")).resolve().parent == storage.resolve()


def test_tensorboard_event_files_read_back(tracked_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome, storage = tracked_sweep
    rows = _store_rows(storage)
    status = _last_status(rows)
    trial_dirs = sorted(p for p in (storage / "ray" / "tune").iterdir() if p.is_dir())
    assert len(trial_dirs) == len(status)
    seen = set()
    for folder in trial_dirs:
        acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        texts = {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
                 for tag in acc.Tags()["tensors"] if tag.startswith("sage/")}
        assert texts["sage/sweep_id/text_summary"] == [(0, outcome.sweep_id)]
        config = json.loads("\n".join(line[4:] for line in texts["sage/config/text_summary"][0][1].splitlines()))
        trial_id = next(t for t in status if t in folder.name)
        seen.add(trial_id)
        mine = sorted((r for r in rows if r["trial_id"] == trial_id), key=lambda r: r["step"])
        assert config["lambda_esp"] == mine[0]["lambda_esp"] and config["lr"] == mine[0]["lr"]
        assert texts["sage/status/text_summary"] == [(mine[-1]["step"], status[trial_id])]
        assert texts["sage/checkpoint/text_summary"] == [(r["step"], r["checkpoint"]) for r in mine]
        for metric in ("asr_text", "util_text"):
            scalars = [(e.step, e.value) for e in acc.Scalars(f"ray/tune/{metric}")]
            # x axis = the training step (not Tune's iteration count); float32 in the event file
            assert scalars == [(r["step"], pytest.approx(r[metric], rel=1e-6)) for r in mine]
    assert seen == set(status)


def test_tracking_spec_errors_name_the_field(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec

    path = tiny_spec(tmp_path)
    with pytest.raises(ConfigError, match=r"tracking\.kind.*'neptune'.*tensorboard"):
        load_spec(str(path), overrides={"tracking.kind": "neptune"})
    with pytest.raises(ConfigError, match=r"unknown key 'tracking.url' \(did you mean 'uri'\?\)"):
        load_spec(str(path), overrides={"tracking.url": "sqlite:///x.db"})
    with pytest.raises(ConfigError, match=r"tracking\.uri='sqlite:///x.db': only read with tracking.kind=mlflow"):
        load_spec(str(path), overrides={"tracking.uri": "sqlite:///x.db"})
    with pytest.raises(ConfigError, match=r"tracking\.uri='ftp://host/x': not a tracking URI"):
        load_spec(str(path), overrides={"tracking.kind": "mlflow", "tracking.uri": "ftp://host/x"})
    spec = load_spec(str(path), overrides={"tracking.kind": "mlflow"})
    assert spec.tracking.kind == "mlflow" and spec.tracking.uri is None
    assert spec.tracking.problems("s3://bucket/sweep")[0].startswith("tracking.uri: required with tracking.kind=mlflow")
