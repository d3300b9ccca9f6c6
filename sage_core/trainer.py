"""The SAGE/DES trainer: a DeepSpeed engine on cached base data, as a recipe of named stages.

``Trainer.fit`` runs :meth:`~Trainer.setup` (batch plan, trainable copy of the frozen encoder,
engine, evaluator, log), then :meth:`~Trainer.train_step` for each step, with
:meth:`~Trainer.save_checkpoint` and :meth:`~Trainer.evaluate` on their schedule, and
:meth:`~Trainer.cleanup`. Each stage's pieces live in their own module: the batch plan and its
last-partial-batch rule (``batch_plan``), the exact full-batch gradient under micro-batches and
data parallelism (``exact_step``), the last-good checkpoint logic (``checkpoint_keeper``),
DeepSpeed and ``torch.distributed`` plumbing (``distributed``), the log (``run_log``), and what a
step reads besides the weights: base encoder, base data, evaluator, step inputs (``train_inputs``).

Under ``torch.distributed`` (a Ray Train ``TorchTrainer`` worker group, or the
``deepspeed``/``torchrun`` launchers) N workers train the same model as one; rank 0 alone
evaluates, logs and writes checkpoints; every rank calls the callbacks (Ray Train's report is
collective).

The trainer never imports Ray: sweeps observe it through :class:`TrainerCallback`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adversarial import AdversarialPrompts
from .batch_plan import plan_batches
from .checkpoint import load_optimizer_state, load_weights, read_meta, save_checkpoint
from .checkpoint_keeper import CheckpointKeeper
from .codebook import BaseData
from .defs.config import TrainConfig
from .defs.errors import ConfigError, NonFiniteLossError, StorageError
from .distributed import (
    agree,
    deepspeed_config,
    end_process_group,
    group_exists,
    initialize_engine,
    process_group,
    release_engine,
    resolve_device,
)
from .encoders import TextEncoder
from .exact_step import backward_full_batch
from .losses import LossWeights
from .precision import uses_autocast
from .run_log import RunLog
from .train_inputs import (
    StepInputs,
    base_data,
    base_encoder,
    geometry_base,
    make_evaluator,
    text_evaluator_factory,
    training_prompts,
)
from .version import code_version

__all__ = ["Trainer", "TrainerCallback", "StepInfo", "EvalInfo", "TrainResult", "train", "prepare",
           "deepspeed_config"]


@dataclass(frozen=True)
class StepInfo:
    step: int
    epoch: int
    total_steps: int
    losses: dict[str, float]
    wall_s: float


@dataclass(frozen=True)
class EvalInfo:
    step: int
    epoch: int
    total_steps: int
    metrics: dict[str, float]
    checkpoint: Path | None
    wall_s: float
    prompt_scores: Any = None  # the evaluator's per-prompt scores (evaluation.prompt_scores), rank 0


@dataclass(frozen=True)
class TrainResult:
    final_checkpoint: Path | None  # None on ranks other than 0
    step: int
    metrics: dict[str, float]
    stopped_early: bool
    concept_guidance_scale: float
    wall_s: float = 0.0


class TrainerCallback:
    """Hooks a sweep uses to observe (and stop) a run; every method is optional."""

    def on_step(self, info: StepInfo) -> None:  # noqa: D401 - hook
        """After every optimiser step."""

    def on_evaluate(self, info: EvalInfo) -> bool | None:
        """After every evaluation; return True to stop training (e.g. the trial was pruned)."""
        return None

    def on_checkpoint(self, path: Path, step: int) -> None:
        """After a checkpoint folder is complete on disk."""


def prepare(cfg: TrainConfig, *, progress: bool = True, encoder: TextEncoder | None = None) -> BaseData:
    """Build (or load) everything the frozen encoder contributes, in ``cfg.cache_dir``: base
    embeddings, codebook, diagnostics prompts and the text evaluator's base data.

    Idempotent; a sweep calls it once in the driver so no trial pays for it.
    """
    enc = encoder or base_encoder(cfg)
    base = base_data(cfg, enc, progress=progress)
    factory = text_evaluator_factory()
    if factory is not None:
        factory(enc, cfg)
    else:
        geometry_base(enc, cfg)
    return base


class Trainer:
    """Train an aligned text encoder with SAGE (or DES) on a DeepSpeed engine.

    ``Trainer(cfg, out_dir=...).fit()`` writes ``out_dir/checkpoints/step_NNNNNN`` folders and
    ``out_dir/log.jsonl`` (one JSON object per step and per evaluation). ``fit`` is a recipe of named
    stages: :meth:`setup`, then :meth:`train_step` per step, :meth:`save_checkpoint` and
    :meth:`evaluate` on their schedule, and :meth:`cleanup`.
    """

    _rank, _world, _autocast = 0, 1, False

    def __init__(self, cfg: TrainConfig, *, out_dir: str | os.PathLike,
                 callbacks: Sequence[TrainerCallback] = (), resume_from: str | os.PathLike | None = None,
                 progress: bool = True, evaluate: bool = True):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        self.resume_from = Path(resume_from) if resume_from else None
        self.progress = progress
        self.evaluate_enabled = evaluate
        self._resume_meta = read_meta(self.resume_from) if self.resume_from else None
        self._log: RunLog | None = None

    # -- the recipe ----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self._t_start = time.perf_counter()
        self._owns_group = not group_exists()  # a group made before us (Ray Train, a caller) is not ours to end
        stopped, ok = False, False
        try:
            self.setup()
            while self.step < self.plan.total and not stopped:
                epoch, losses = self.train_step()
                stopped = self._after_step(epoch, losses)
            ok = True
        finally:
            self.cleanup(failed=not ok)
        # The last step is always an evaluation, so its checkpoint exists (on rank 0).
        return TrainResult(final_checkpoint=self.keeper.latest, step=self.step, metrics=self._last_metrics,
                           stopped_early=stopped and self.step < self.plan.total,
                           concept_guidance_scale=self._inputs.scale, wall_s=time.perf_counter() - self._t_start)

    def setup(self) -> None:
        """Plan the batches, build the trainable copy, the DeepSpeed engine, the evaluator and the log."""
        cfg = self.cfg
        safe_prompts, unsafe_prompts = training_prompts(cfg)
        self._rank, self._world = process_group()
        if cfg.lambda_adv > 0 and self._world > 1:  # before any model is built
            raise ConfigError(f"lambda_adv={cfg.lambda_adv}: adversarial training runs on one rank; this run has "
                              f"{self._world} (set lambda_adv to 0 or train on one rank)")
        if cfg.precision == "fp64" and self._world > 1:  # before any model is built
            raise ConfigError(f"precision 'fp64' is a single-process reference run; this run has "
                              f"{self._world} ranks (use 'fp32' or 'auto')")
        self.plan = plan_batches(cfg, pairs=max(len(safe_prompts), len(unsafe_prompts)), world=self._world)
        self.step = int(self._resume_meta["step"]) if self._resume_meta else 0
        if self.step > self.plan.total:
            raise ConfigError(f"resume_from={self.resume_from}: checkpoint step {self.step} is beyond "
                              f"this run's {self.plan.total} steps")
        lead = self._rank == 0
        device = resolve_device(cfg)
        self._autocast = uses_autocast(cfg.precision, device)
        torch.manual_seed(cfg.seed)
        base_enc = base_encoder(cfg, device)
        base = base_data(cfg, base_enc, progress=self.progress)
        self._evaluator = make_evaluator(base_enc, cfg, text=self.evaluate_enabled) if lead else None
        self._weights = LossWeights.from_config(cfg, mean_safe_norm=base.mean_safe_norm)
        self._adv = AdversarialPrompts(base_enc, unsafe_prompts, attack=cfg.adv_attack_config(),
                                       every=cfg.adv_every) if cfg.lambda_adv > 0 else None
        self.encoder = self._trainable_copy(base_enc)
        self._engine, self._optimizer = self._init_engine(self.encoder, micro=self.plan.micro,
                                                          accumulation=self.plan.accumulation)
        if self.resume_from is not None and self._resume_meta is not None:
            opt_state = load_optimizer_state(self.resume_from, self._resume_meta)
            if opt_state is not None and cfg.zero_stage == 0:
                self._optimizer.load_state_dict(opt_state)
        dev = self._engine.device
        tok = self.encoder.tokenize
        self._inputs = StepInputs(safe=tok(safe_prompts), unsafe=tok(unsafe_prompts), concept=tok([cfg.concept]),
                                   b_all=base.safe, m_all=base.safe[base.farthest], v=base.direction.to(dev),
                                   u=base.empty.to(dev), scale=self._weights.scale)
        self.keeper = CheckpointKeeper(self.out_dir, keep=cfg.keep_checkpoints, resume_from=self.resume_from)
        self._window: dict[str, list[float]] = {}
        self._last_metrics: dict[str, float] = {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log = RunLog(self.out_dir, lead=lead, progress=self.progress, total=self.plan.total,
                           initial=self.step, desc=f"{cfg.method} training")

    def train_step(self) -> tuple[int, dict[str, float]]:
        """One optimiser step on the plan's next batch: (its epoch, the loss terms)."""
        epoch, idx = self.plan.batch(self.step)
        batch = self._inputs.batch(idx, self._engine.device)
        if self._adv is not None:   # refreshed against the current weights every adv_every steps
            batch["adv"] = self._adv.batch(self.encoder, idx % len(self._adv.prompts), step=self.step,
                                           device=self._engine.device)
        terms = self._train_step(self._engine, batch, v=self._inputs.v, u=self._inputs.u, w=self._weights,
                                 accumulation=self.plan.accumulation)
        if not all(math.isfinite(x) for x in terms.values()):
            bad = {k: x for k, x in terms.items() if not math.isfinite(x)}
            raise NonFiniteLossError(f"non-finite loss at step {self.step + 1}: {bad}; "
                                     f"{self.keeper.loss_was_not_finite()}")
        self.keeper.loss_was_finite()
        self._engine.step()
        self.step += 1
        return epoch, terms

    def evaluate(self) -> dict[str, float]:
        """Loss terms averaged since the last evaluation, the evaluator's metrics (rank 0) and the scale."""
        metrics = {k: float(np.mean(xs)) for k, xs in self._window.items()}
        self._window.clear()
        if self._evaluator is not None:
            was = self.encoder.model.training
            with torch.no_grad():
                metrics.update(self._evaluator(self.encoder))
            self.encoder.model.train(was)
        metrics["concept_guidance_scale"] = self._inputs.scale
        self._last_metrics = metrics
        return metrics

    def save_checkpoint(self, *, epoch: int) -> Path | None:
        """Write ``step_NNNNNN`` (rank 0; under ZeRO-3 every rank gathers) and prune old ones; its path or None."""
        cfg, enc = self.cfg, self.encoder
        path = self.keeper.path_for(self.step)
        if self._rank != 0 and cfg.zero_stage != 3:
            return None
        opt_state = self._optimizer.state_dict() if cfg.zero_stage == 0 else None
        meta = {"config": cfg.to_dict(), "step": self.step, "epoch": epoch, "seed": cfg.seed,
                "code_version": code_version(), "concept_guidance_scale": self._inputs.scale,
                "metrics": self._last_metrics, "exact_resume": opt_state is not None}
        if cfg.zero_stage == 3:  # ZeRO-3 partitions the weights: gather them to save them whole
            import deepspeed  # lazy: deepspeed (~1 s), only for training or the DeepSpeed probe

            with deepspeed.zero.GatheredParameters(list(enc.model.parameters()), modifier_rank=None):
                if self._rank != 0:
                    return None
                save_checkpoint(path, model=enc.model, tokenizer=enc.tokenizer, meta=meta, optimizer_state=None)
        else:
            save_checkpoint(path, model=enc.model, tokenizer=enc.tokenizer, meta=meta, optimizer_state=opt_state)
        self.keeper.written(path)
        return path

    def cleanup(self, *, failed: bool = False) -> None:
        """On every exit of :meth:`fit` (a failed setup too): close the log, release the engine and, when
        this trainer started it, end the process group (``distributed.end_process_group``), so no
        communication thread outlives the run. Checkpoints and reports are complete before it runs. On
        success the encoder keeps its trained weights (under ZeRO-3 they are gathered back first)."""
        engine, self._engine, self._optimizer = getattr(self, "_engine", None), None, None
        try:
            if self._log is not None:
                self._log.close()
            if engine is not None:
                release_engine(engine, keep_weights=not failed)
        finally:
            del engine  # the last reference: the group's end below frees it with the groups it holds
            if getattr(self, "_owns_group", False):
                end_process_group()

    # -- between the stages --------------------------------------------------------------
    def _after_step(self, epoch: int, losses: dict[str, float]) -> bool:
        """Log and report the step, checkpoint and evaluate on schedule; True when a callback stops the run."""
        log = self._log
        assert log is not None  # made by setup(), before the first step
        for k, x in losses.items():
            self._window.setdefault(k, []).append(x)
        log.step(step=self.step, epoch=epoch, losses=losses)
        info = StepInfo(step=self.step, epoch=epoch, total_steps=self.plan.total, losses=losses,
                        wall_s=time.perf_counter() - self._t_start)
        for cb in self.callbacks:
            cb.on_step(info)
        every = self.plan.per_epoch
        is_eval = self.step % (self.cfg.eval_every or every) == 0 or self.step == self.plan.total
        ckpt = None
        if is_eval or self.step % (self.cfg.checkpoint_every or every) == 0:
            ckpt = self.save_checkpoint(epoch=epoch)
            if ckpt is not None:
                for cb in self.callbacks:
                    cb.on_checkpoint(ckpt, self.step)
        if not is_eval:
            return False
        metrics = self.evaluate()
        if ckpt is not None:
            (ckpt / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        log.evaluation(step=self.step, metrics=metrics)
        eval_info = EvalInfo(step=self.step, epoch=epoch, total_steps=self.plan.total, metrics=metrics, checkpoint=ckpt,
                             wall_s=time.perf_counter() - self._t_start,
                             prompt_scores=getattr(self._evaluator, "last_prompt_scores", None))
        return agree(any([cb.on_evaluate(eval_info) for cb in self.callbacks]), world=self._world)

    def _trainable_copy(self, base_enc: TextEncoder) -> TextEncoder:
        """A trainable deep copy of E0 (resumed weights loaded); E0 stays untouched, its outputs are cached."""
        enc = TextEncoder(model=copy.deepcopy(base_enc.model), tokenizer=base_enc.tokenizer,
                          max_length=base_enc.max_length, is_clip=base_enc.is_clip, source=base_enc.source)
        if self.resume_from:
            missing = enc.model.load_state_dict(load_weights(self.resume_from), strict=False)
            if missing.missing_keys:
                raise StorageError(f"resume_from={self.resume_from}: weights lack {missing.missing_keys[:3]}")
        for p in enc.model.parameters():
            p.requires_grad_(True)
        enc.model.train()
        return enc

    def _init_engine(self, enc: TextEncoder, *, micro: int, accumulation: int):
        return initialize_engine(enc.module(), self.cfg, micro=micro, accumulation=accumulation)

    def _train_step(self, engine, batch: dict[str, Any], *, v: torch.Tensor, u: torch.Tensor, w: LossWeights,
                    accumulation: int) -> dict[str, float]:
        return backward_full_batch(engine, batch, v=v, u=u, w=w, accumulation=accumulation, rank=self._rank,
                                   world=self._world, autocast=self._autocast)

def train(cfg: TrainConfig, *, out_dir: str | os.PathLike, callbacks: Sequence[TrainerCallback] = (),
          resume_from: str | os.PathLike | None = None, progress: bool = True) -> TrainResult:
    """Python entry point: ``sage_core.train(cfg, out_dir=...)``."""
    return Trainer(cfg, out_dir=out_dir, callbacks=callbacks, resume_from=resume_from, progress=progress).fit()
