"""The Tune trainable: one SAGE/DES training run, reporting text metrics at every evaluation.

Each evaluation of :class:`sage_core.trainer.Trainer` becomes one ``tune.report`` with the
checkpoint written at that step, so the scheduler decides at rungs and Tune can restart the trial
from its last reported checkpoint (``tune.get_checkpoint()`` -> ``Trainer(resume_from=...)``) after
a crash, a lost node or a resumed driver. Base embeddings come from the sweep's shared cache,
which the driver filled before the first trial started.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_core.errors import TrialError

from .search import FINAL_KEY
from .spec import trial_values

__all__ = ["TrialContext", "train_trial", "TuneReportCallback", "reported_metrics"]


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs from the driver (shipped once through ``tune.with_parameters``)."""

    sweep_id: str
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    objectives: tuple[str, ...] = ()
    device_share: float = 1.0  # devices held by one trial (gpus, or cpus without gpus)


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


class TuneReportCallback(_Base):  # type: ignore[misc,valid-type]
    """Trainer callback: every evaluation -> ``tune.report(metrics, checkpoint=...)``."""

    def __init__(self, *, context: TrialContext):
        self.context = context

    def on_evaluate(self, info: Any) -> bool | None:
        from ray import tune

        missing = [m for m in self.context.objectives if m not in info.metrics]
        if missing:
            raise TrialError(f"objectives {missing} are not among the reported metrics "
                             f"({', '.join(sorted(info.metrics))}); check the spec's objectives")
        metrics = reported_metrics(info.metrics, step=info.step, total_steps=info.total_steps, epoch=info.epoch,
                                   wall_s=info.wall_s, device_share=self.context.device_share)
        bad = [m for m in self.context.objectives if not math.isfinite(metrics[m])]
        if bad:
            from sage_core.errors import NonFiniteLossError

            raise NonFiniteLossError(f"objective(s) {bad} are not finite at step {info.step}")
        checkpoint = tune.Checkpoint.from_directory(str(info.checkpoint)) if info.checkpoint else None
        tune.report(metrics, checkpoint=checkpoint)
        return None


def train_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable (wrap with ``tune.with_parameters(train_trial, context=...)``)."""
    from ray import tune

    from sage_core.config import load_config
    from sage_core.trainer import Trainer

    cfg = load_config(overrides=trial_values(context.base, config, context.variants))
    work = Path(tempfile.mkdtemp(prefix=f"sage-trial-{tune.get_context().get_trial_id()}-"))
    resume_from = None
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(work / "restored")))
        trainer = Trainer(cfg, out_dir=work / "run", callbacks=[TuneReportCallback(context=context)],
                          resume_from=resume_from, progress=False)
        trainer.fit()
    finally:
        shutil.rmtree(work, ignore_errors=True)
