"""Experiment tracking from a spec's ``tracking:`` section, through Ray Tune's logger callbacks.

Every sweep writes TensorBoard event files into each trial's Tune folder
(``<storage>/ray/tune/<trial>/events.out.tfevents.*``; ``tensorboard --logdir <storage>/ray/tune``):
Tune's ``TBXLoggerCallback`` with the training step as the x axis. ``tracking.kind`` adds:

- ``mlflow``: Tune's ``MLflowLoggerCallback``, one MLflow run per trial in ``tracking.uri``
  (default ``sqlite:///<storage>/mlflow.db``, artifacts in ``<storage>/mlflow-artifacts``;
  ``mlflow ui --backend-store-uri sqlite:///<storage>/mlflow.db`` shows them);
- ``wandb``: Tune's ``WandbLoggerCallback`` in offline mode, runs under ``<storage>/wandb``
  (``wandb sync <storage>/wandb/wandb/offline-run-*`` uploads them later).

Per trial, MLflow and TensorBoard get the resolved TrainConfig (every field the trial trained
with, not only the sampled ones), every reported metric at its training step, the sweep id,
variant and status (``running``, then ``finished``, ``pruned`` or ``failed``) and the path of
each reported checkpoint (a reference: checkpoints are not copied). A resumed sweep continues
the trial's MLflow run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param

from .resolved_trial import TrialResolver
from .search import FINAL_KEY
from .spec import VARIANT, is_uri
from .store_callback import BOOKKEEPING_KEYS

if TYPE_CHECKING:
    from .spec import SweepSpec

__all__ = ["tracking_callbacks", "mlflow_uri", "trial_params", "trial_metrics",
           "TensorBoardTracker", "MLflowTracker", "TAG_PREFIX"]

TAG_PREFIX = "sage."
_SERVER_SCHEMES = ("http://", "https://", "databricks")


# -- what a tracker records about a trial ---------------------------------------------------------
def trial_params(trial: Any, *, resolver: TrialResolver) -> dict[str, Any]:
    """The trial's resolved TrainConfig as flat columns (the results store's hyperparameter columns)."""
    return dict(resolver(trial).columns)


def trial_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric metrics of one Tune result (what the results store writes as metrics)."""
    return {k: float(v) for k, v in result.items()
            if k not in BOOKKEEPING_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def _status(trial: Any, *, failed: bool) -> str:
    if failed:
        return "failed"
    return "finished" if (trial.last_result or {}).get(FINAL_KEY) else "pruned"


def _step(trial: Any, result: Mapping[str, Any] | None = None) -> int:
    result = result if result is not None else (trial.last_result or {})
    return int(result.get("step", result.get("training_iteration", 0)))


def _checkpoint_path(trial: Any) -> str | None:
    return str(getattr(trial.checkpoint, "path", "") or "") or None


try:
    from ray.tune.logger import TBXLoggerCallback as _TBX
except ImportError:  # pragma: no cover - ray[tune] ships tensorboardX
    _TBX = object  # type: ignore[assignment,misc]


class TensorBoardTracker(_TBX):
    """Tune's TensorBoard logger, with the training step as x axis (scalars ``ray/tune/<metric>``)
    and text summaries ``sage/sweep_id``, ``sage/variant``, ``sage/config`` (JSON),
    ``sage/checkpoint`` (per step) and ``sage/status`` (at the trial's end)."""

    def __init__(self, *, sweep_id: str, resolver: TrialResolver):
        super().__init__()
        self.sweep_id = sweep_id
        self.resolver = resolver

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(trial)
        writer = self._trial_writer[trial]
        params = trial_params(trial, resolver=self.resolver)
        writer.add_text("sage/sweep_id", self.sweep_id, global_step=0)
        writer.add_text("sage/variant", str(trial.config.get(VARIANT, "")), global_step=0)
        # Four leading spaces: TensorBoard's text tab renders markdown, this keeps the JSON as code.
        body = json.dumps(params, indent=1, sort_keys=True, default=str)
        writer.add_text("sage/config", "\n".join("    " + line for line in body.splitlines()), global_step=0)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        # Tune's logger puts `timesteps_total` (else its iteration count) on the x axis.
        super().log_trial_result(iteration, trial, {**result, "timesteps_total": _step(trial, result)})

    def log_trial_save(self, trial: Any) -> None:
        path = _checkpoint_path(trial)
        if path and trial in self._trial_writer:
            self._trial_writer[trial].add_text("sage/checkpoint", path, global_step=_step(trial))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].add_text("sage/status", _status(trial, failed=failed), global_step=_step(trial))
        super().log_trial_end(trial, failed=failed)


try:
    from ray.air.integrations.mlflow import MLflowLoggerCallback as _MLflow
except ImportError:  # pragma: no cover
    _MLflow = object  # type: ignore[assignment,misc]


class MLflowTracker(_MLflow):
    """Tune's MLflow logger: one run per trial (tags ``sage.sweep_id``, ``sage.trial_id``,
    ``sage.variant``, ``sage.status``, ``sage.checkpoint``), the resolved config as params,
    metrics at the training step in one batch per result, and ``sage/checkpoints.json`` (step ->
    checkpoint path) as an artifact. A trial that already has a run (a resumed sweep) continues it."""

    def __init__(self, *, uri: str, experiment: str, artifact_location: str | None, sweep_id: str,
                 resolver: TrialResolver):
        super().__init__(uri, experiment_name=experiment, tags={f"{TAG_PREFIX}sweep_id": sweep_id})
        self.artifact_location = artifact_location
        self.sweep_id = sweep_id
        self.resolver = resolver
        self._checkpoints: dict[str, dict[str, str]] = {}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.mlflow_util.setup_mlflow(tracking_uri=self.tracking_uri, experiment_name=self.experiment_name,
                                      artifact_location=self.artifact_location)
        self.tags = dict(self.tags or {})
        self._trial_runs = {}

    @property
    def client(self):
        return self.mlflow_util._get_client()

    def _existing_run(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.mlflow_util.experiment_id], max_results=1,
            filter_string=(f"tags.`{TAG_PREFIX}sweep_id` = '{self.sweep_id}' "
                           f"AND tags.`{TAG_PREFIX}trial_id` = '{trial_id}'"))
        return runs[0].info.run_id if runs else None

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_runs:
            return
        trial_id = str(trial.trial_id)
        run_id = self._existing_run(trial_id)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, f"{TAG_PREFIX}status", "running")
        else:
            tags = {**(self.tags or {}), f"{TAG_PREFIX}trial_id": trial_id, f"{TAG_PREFIX}status": "running",
                    f"{TAG_PREFIX}variant": str(trial.config.get(VARIANT, "")), "trial_name": str(trial)}
            run_id = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            params = [Param(k, str(v)) for k, v in trial_params(trial, resolver=self.resolver).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=params[i:i + 100])
        self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        run_id = self._trial_runs[trial]
        now, step = int(time.time() * 1000), _step(trial, result)
        metrics = [Metric(k, v, now, step) for k, v in trial_metrics(result).items()]
        for i in range(0, len(metrics), 1000):  # and at most 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if result.get("checkpoint_path"):  # multi-worker trials report their Ray Train checkpoint here
            self._record_checkpoint(trial, step=step, path=str(result["checkpoint_path"]))

    def log_trial_save(self, trial: Any) -> None:
        path = _checkpoint_path(trial)
        if path and trial in self._trial_runs:
            self._record_checkpoint(trial, step=_step(trial), path=path)

    def _record_checkpoint(self, trial: Any, *, step: int, path: str) -> None:
        run_id = self._trial_runs[trial]
        known = self._checkpoints.setdefault(run_id, {})
        if known.get(str(step)) == path:
            return
        known[str(step)] = path
        self.client.set_tag(run_id, f"{TAG_PREFIX}checkpoint", path)
        self.client.log_dict(run_id, known, "sage/checkpoints.json")

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._trial_runs.get(trial)
        if run_id is None:
            return
        self.client.set_tag(run_id, f"{TAG_PREFIX}status", _status(trial, failed=failed))
        self.mlflow_util.end_run(run_id=run_id, status="FAILED" if failed else "FINISHED")


try:
    from ray.air.integrations.wandb import WandbLoggerCallback as _Wandb
except ImportError:  # pragma: no cover
    _Wandb = object  # type: ignore[assignment,misc]


class WandbOfflineTracker(_Wandb):
    """Tune's W&B logger, always offline (Tune asks for an API key unless ``WANDB_MODE`` says offline)."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        os.environ["WANDB_MODE"] = "offline"
        super().setup(*args, **kwargs)


# -- from the spec ----------------------------------------------------------------------------------
def mlflow_uri(spec: SweepSpec, storage: str) -> str:
    """``tracking.uri``, or the sqlite file in the sweep folder."""
    if spec.tracking.uri:
        return spec.tracking.uri
    return "sqlite:///" + str(Path(storage.removeprefix("file://")).expanduser().resolve() / "mlflow.db")


def tracking_callbacks(spec: SweepSpec, *, storage: str, sweep_id: str, resolver: TrialResolver) -> list[Any]:
    """The Tune callbacks for ``spec.tracking`` (TensorBoard always, plus MLflow or W&B); ``resolver``:
    the one the store callback uses, so each trial's TrainConfig is built once on the driver."""
    callbacks: list[Any] = [TensorBoardTracker(sweep_id=sweep_id, resolver=resolver)]
    experiment = spec.tracking.experiment or spec.name
    if spec.tracking.kind == "mlflow":
        uri = mlflow_uri(spec, storage)
        local = not is_uri(storage) and (spec.tracking.uri is None or not uri.startswith(_SERVER_SCHEMES))
        artifacts = (Path(storage).expanduser().resolve() / "mlflow-artifacts").as_uri() if local else None
        callbacks.append(MLflowTracker(uri=uri, experiment=experiment, artifact_location=artifacts,
                                       sweep_id=sweep_id, resolver=resolver))
    elif spec.tracking.kind == "wandb":
        folder = None if is_uri(storage) else Path(storage).expanduser().resolve() / "wandb"
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        callbacks.append(WandbOfflineTracker(project=experiment, group=sweep_id, mode="offline",
                                             dir=str(folder) if folder else None, tags=[sweep_id]))
    return callbacks
