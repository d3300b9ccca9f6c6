"""The Tune trainable: one SAGE/DES training run, reporting text metrics at every evaluation.

Each evaluation of :class:`sage_core.trainer.Trainer` becomes one ``tune.report`` with the
checkpoint written at that step, so the scheduler decides at rungs and Tune can restart the trial
from its last reported checkpoint (``tune.get_checkpoint()`` -> ``Trainer(resume_from=...)``) after
a crash, a lost node or a resumed driver. Base embeddings come from the user-level cache
(``cache_dir``, resolved by the driver), which the driver filled before the first trial started.

With ``resources.workers > 1`` the trial function is only the driver of a Ray Train
``TorchTrainer``: N workers (each with the spec's cpus/gpus) form one torch.distributed group and
run the trainer data-parallel (exact full-batch gradients, see ``sage_core.trainer``). Rank 0's
reports reach Tune through Ray Train's ``TuneReportCallback``; checkpoints live in the Ray Train run
``<storage>/ray/train/<trial_id>``, which a retried trial resumes from.

A finished run does not depend on its teardown (issue 27): the final report is committed before the
trainer's teardown (Ray Train workers wait until the controller has taken it), and a trial restored
from its final checkpoint, because a process died after the work was done, reports that checkpoint's
saved metrics again instead of training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.prompt_scores import write_prompt_scores
from sage_core.defs.errors import NonFiniteLossError, TrialError
from sage_core.defs.metrics import lookup, objective_metrics
from sage_core.trainer import Trainer

from .fault_injection import fault_callbacks  # tests inject faults through the environment
from .resolved_trial import trial_config
from .robust_stage import TrialStages
from .search import FINAL_KEY

__all__ = ["TrialContext", "train_trial", "TuneReportCallback", "TrainWorkerReportCallback", "reported_metrics",
           "REPORT_FILE"]

#: The metrics a checkpoint was reported with, saved inside it: a trial resumed from its final
#: checkpoint reports them again instead of training (a finished run does not depend on its teardown).
REPORT_FILE = "tune_report.json"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the driver (shipped once through ``tune.with_parameters``)."""

    sweep_id: str
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    objectives: tuple[str, ...] = ()
    device_share: float = 1.0  # devices held by one trial (gpus, or cpus without gpus)
    workers: int = 1  # data-parallel Ray Train workers per trial (1: the trial trains in-process)
    worker_resources: dict[str, float] = field(default_factory=dict)  # per worker: CPU, GPU, custom
    train_storage: str | None = None  # where multi-worker trials keep their Ray Train runs
    robust: dict[str, Any] | None = None  # fidelity.robust: benign fine-tune stage (sweeps.robust_stage)
    proximal: dict[str, Any] | None = None  # fidelity.proximal: proximal-disruption stage
    attack: dict[str, Any] | None = None  # fidelity.attack without ``at``: the attack stage's AttackConfig values
    attack_at: tuple[int, ...] | None = None  # its steps besides the final one (None: every evaluation)
    scores_root: str | None = None  # where evaluations' per-prompt scores go (analysis.prompt_scores)


def reported_metrics(metrics: dict[str, Any], *, step: int, total_steps: int, epoch: int, wall_s: float,
                     device_share: float) -> dict[str, float]:
    """Numeric evaluation metrics + the bookkeeping keys the scheduler and store read."""
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({"step": int(step), "total_steps": int(total_steps), "epoch": int(epoch),
                FINAL_KEY: float(step >= total_steps), "trial_wall_s": float(wall_s),
                "trial_device_s": float(wall_s) * device_share})
    return out


try:
    from sage_core.trainer import TrainerCallback as _Base
except ImportError:  # pragma: no cover - the trainer is part of sage_core
    _Base = object  # type: ignore[assignment,misc]


class TuneReportCallback(_Base):
    """Trainer callback: every evaluation -> ``tune.report(metrics, checkpoint=...)``."""

    def __init__(self, *, context: TrialContext, trial_id: str = ""):
        self.context = context
        self.trial_id = trial_id
        self.stages: Any = None  # sweeps.robust_stage.TrialStages when the spec names fidelity.robust/proximal

    def _checked(self, info: Any) -> dict[str, float]:
        final = info.step >= info.total_steps
        if self.stages is not None and info.checkpoint is not None:
            more = self.stages(info.metrics, info.checkpoint, step=int(info.step), final=final)
            info = dataclasses.replace(info, metrics={**info.metrics, **more})
        missing = [m for m in self.context.objectives if m not in info.metrics and self._measured(m, info.step, final)]
        if missing:
            raise TrialError(f"objectives {missing} are not among the reported metrics "
                             f"({', '.join(sorted(info.metrics))}); check the spec's objectives")
        metrics = reported_metrics(info.metrics, step=info.step, total_steps=info.total_steps, epoch=info.epoch,
                                   wall_s=info.wall_s, device_share=self.context.device_share)
        # An objective not measured at this evaluation (the attack stage's, between its steps) is NaN:
        # every result names every objective (Tune's strict metric check); the store and fronts skip NaN.
        unmeasured = [m for m in self.context.objectives if m not in metrics]
        metrics.update({m: math.nan for m in unmeasured})
        self._write_prompt_scores(info)
        bad = [m for m in self.context.objectives if m not in unmeasured and not math.isfinite(metrics[m])]
        if bad:
            raise NonFiniteLossError(f"objective(s) {bad} are not finite at step {info.step}")
        return metrics

    def _measured(self, metric: str, step: int, final: bool) -> bool:
        """``metric`` is measured at this evaluation: the attack stage's only at its steps (the rungs and
        the final step, where the scheduler and the search read them)."""
        if getattr(lookup(metric), "fidelity", None) != "attack" or self.stages is None:
            return True
        return bool(self.stages.attacks_at(int(step), final=final))

    def _write_prompt_scores(self, info: Any) -> None:
        """The evaluation's per-prompt scores beside the results, for paired comparisons (``sage pareto``)."""
        scores = getattr(info, "prompt_scores", None)
        if self.context.scores_root and self.trial_id and scores is not None:
            write_prompt_scores(self.context.scores_root, sweep_id=self.context.sweep_id, trial_id=self.trial_id,
                                step=int(info.step), columns=scores.columns(), pools=scores.pools,
                                metrics={*objective_metrics(), *self.context.objectives})  # graded ones only

    def on_evaluate(self, info: Any) -> bool | None:
        metrics = self._checked(info) if self._lead() else {"step": int(info.step)}  # rank 0 holds the metrics
        if info.checkpoint is not None:  # the report travels with its checkpoint (see report_again)
            (Path(info.checkpoint) / REPORT_FILE).write_text(json.dumps(metrics), encoding="utf-8")
        self.send(metrics, checkpoint=info.checkpoint, step=int(info.step))
        return None

    def _lead(self) -> bool:
        """This process reports the metrics (in-process trials: always)."""
        return True

    def send(self, metrics: dict[str, Any], *, checkpoint: Path | None, step: int) -> None:
        from ray import tune  # lazy: ray (~0.7 s), only inside a Ray trial

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)

    def report_again(self, checkpoint: Path) -> bool:
        """Resumed from the trial's final checkpoint (its run had finished, then a rank died in teardown):
        send that checkpoint's report again, so the sweep records the trial as finished, and return
        True; nothing is trained again. False for any earlier checkpoint."""
        saved = checkpoint / REPORT_FILE
        report = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
        if not report.get(FINAL_KEY):
            return False
        lead = self._lead()
        self.send(report if lead else {"step": int(report["step"])}, checkpoint=checkpoint if lead else None,
                  step=int(report["step"]))
        return True


class TrainWorkerReportCallback(TuneReportCallback):
    """The same report from a Ray Train worker: every rank calls ``ray.train.report`` (a collective);
    rank 0 holds the metrics and the checkpoint."""

    def _lead(self) -> bool:
        import ray.train  # lazy: ray (~0.7 s), only inside a Ray trial

        return ray.train.get_context().get_world_rank() == 0

    def send(self, metrics: dict[str, Any], *, checkpoint: Path | None, step: int) -> None:
        import ray.train  # lazy: ray (~0.7 s), only inside a Ray trial

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint
                         else None, checkpoint_dir_name=f"step_{step:06d}")

    def on_evaluate(self, info: Any) -> bool | None:
        super().on_evaluate(info)
        if info.step == info.total_steps:
            _wait_until_taken()
        return None

    def report_again(self, checkpoint: Path) -> bool:
        again = super().report_again(checkpoint)
        if again:
            _wait_until_taken()
        return again


def _wait_until_taken() -> None:
    """Return once Ray Train's controller has taken this worker's reports.

    ``ray.train.report`` returns with the report still queued in the worker, and the controller
    consolidates a round only once it has polled every rank's report: a rank that died before its
    poll (a native abort in teardown, issue 27) lost the final report of a finished run. Waiting here,
    before the trainer's teardown, commits it first. The queue is Ray Train's own (one report deep,
    emptied by each poll); Ray has no public call for this yet.
    """
    from ray.train.v2._internal.execution.context import get_train_context  # lazy: ray, only in a Ray Train worker

    get_train_context().get_result_queue().join()


def _run_trainer(config: dict[str, Any], context: TrialContext, *, checkpoint: Any, callback: TuneReportCallback,
                 name: str) -> None:
    """Build the trial's TrainConfig (once, from the values the driver checked: its base and
    variants, and the trial's params) and fit, resuming from ``checkpoint`` (a Ray checkpoint) if any."""
    cfg = trial_config(context.base, config, context.variants)
    if context.robust is not None or context.proximal is not None or context.attack is not None:
        callback.stages = TrialStages(cfg, robust=context.robust, proximal=context.proximal, attack=context.attack,
                                      attack_at=context.attack_at)
    work = Path(tempfile.mkdtemp(prefix=f"sage-trial-{name}-"))
    try:
        resume_from = Path(checkpoint.to_directory(str(work / "restored"))) if checkpoint is not None else None
        if resume_from is not None and callback.report_again(resume_from):
            return
        faults = fault_callbacks()  # tests only; after the report callback, so they see its report gone out
        Trainer(cfg, out_dir=work / "run", callbacks=[callback, *faults], resume_from=resume_from,
                progress=False).fit()
        for fault in faults:
            fault.after_run()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker (torch.distributed is already initialised by the TorchTrainer)."""
    import ray.train  # lazy: ray (~0.7 s), only inside a Ray trial

    context: TrialContext = loop_config["context"]
    ctx = ray.train.get_context()
    _run_trainer(loop_config["params"], context, checkpoint=ray.train.get_checkpoint(),
                 callback=TrainWorkerReportCallback(context=context, trial_id=loop_config["trial_id"]),
                 name=f"{loop_config['trial_id']}-rank{ctx.get_world_rank()}")


def _train_with_workers(config: dict[str, Any], context: TrialContext) -> None:
    """Trial driver: one Ray Train run of ``context.workers`` data-parallel workers."""
    import ray.train  # lazy: ray (~0.7 s), only inside a Ray trial
    from ray import tune  # lazy: ray (~0.7 s), only inside a Ray trial
    from ray.train.torch import TorchConfig, TorchTrainer  # lazy: ray (~1 s)
    from ray.tune.integration.ray_train import TuneReportCallback as TrainToTune  # lazy: ray (~1 s)

    trial_id = tune.get_context().get_trial_id()
    res = dict(context.worker_resources)
    gpu = res.get("GPU", 0) > 0
    trainer = TorchTrainer(
        _train_worker, train_loop_config={"params": config, "context": context, "trial_id": trial_id},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=context.workers, use_gpu=gpu, resources_per_worker=res),
        # Same name on a retry: Ray Train restores the run's latest checkpoint into every worker.
        # ray.train picks its v2 RunConfig (logging_config, Train callbacks) at import; mypy reads the v1 class.
        run_config=ray.train.RunConfig(name=trial_id, storage_path=context.train_storage, callbacks=[TrainToTune()],  # type: ignore[call-arg,list-item]
                                       failure_config=ray.train.FailureConfig(max_failures=0),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       # INFO would echo every report's full metrics dict to the console.
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING")))
    trainer.fit()


def train_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable (wrap with ``tune.with_parameters(train_trial, context=...)``)."""
    from ray import tune  # lazy: ray (~0.7 s), only inside a Ray trial

    if context.workers > 1:
        _train_with_workers(config, context)
        return
    trial_id = tune.get_context().get_trial_id()
    _run_trainer(config, context, checkpoint=tune.get_checkpoint(),
                 callback=TuneReportCallback(context=context, trial_id=trial_id), name=trial_id)
