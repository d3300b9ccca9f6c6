"""The SAGE/DES trainer: DeepSpeed engine, cached base data, exact large-batch accumulation.

One optimiser step sees ``batch_size`` (safe, unsafe) pairs. ESP and LSA are batch-level
losses (a spread and a neighbourhood over the whole batch), so ordinary micro-batch gradient
accumulation would change the method. With ``micro_batch_size < batch_size`` the trainer
therefore accumulates at the embedding level: it embeds the whole batch without a graph, takes
the loss gradient with respect to the embeddings, then re-runs each micro-batch with a graph
and back-propagates that gradient (``engine.backward`` once per micro-batch). The result is the
gradient of the full-batch loss, on memory for one micro-batch.

The same trick makes data-parallel runs exact. Under ``torch.distributed`` (a Ray Train
``TorchTrainer`` worker group, or the ``deepspeed``/``torchrun`` launchers) every rank embeds its
shard of the batch, the shards are all-gathered, every rank computes the same full-batch loss and
back-propagates only its shard's part; DeepSpeed's gradient all-reduce then yields the full-batch
gradient, so N workers train the same model as one. Rank 0 alone evaluates, logs and writes
checkpoints; every rank calls the callbacks (Ray Train's report is collective).

The trainer never imports Ray: sweeps observe it through :class:`TrainerCallback`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .checkpoint import (list_checkpoints, load_optimizer_state, load_weights, read_meta,
                         save_checkpoint)
from .codebook import BaseData, build_base_data
from .config import TrainConfig
from .data import load_prompts
from .diagnostics import geometry_report
from .encoders import TextEncoder, load_encoder
from .errors import ConfigError, NonFiniteLossError, StorageError
from .losses import LossWeights, sage_loss, unsafe_targets
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


# --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _single_process_env() -> Iterator[None]:
    """DeepSpeed reaches for MPI unless RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are
    set: fill in the missing ones. The port (a free one, so concurrent trials never collide) is set
    for the initialisation only, so processes started later do not inherit a port this one holds."""
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    added_port = "MASTER_PORT" not in os.environ
    if added_port:
        os.environ["MASTER_PORT"] = str(_free_port())
    try:
        yield
    finally:
        if added_port:
            os.environ.pop("MASTER_PORT", None)


def _dist_world() -> tuple[int, int]:
    """(rank, world size) of the ``torch.distributed`` group: the one already initialised (Ray Train),
    else one started from a launcher's environment (``WORLD_SIZE`` > 1: deepspeed, torchrun), else (0, 1)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _all_gather_rows(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Concatenate every rank's rows (rank r holds ``sizes[r]`` of them) on every rank."""
    if len(sizes) == 1:
        return x
    width = max(sizes)
    padded = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but no CUDA device is visible; use device=cpu or auto")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def deepspeed_config(cfg: TrainConfig, *, micro_batch: int, accumulation: int) -> dict[str, Any]:
    """The DeepSpeed JSON config generated from a TrainConfig.

    DeepSpeed's own bf16 mode is off on purpose: it would cast the trainable encoder to bf16, so
    at step 0 it would no longer equal the frozen fp32 encoder whose outputs are cached (and the
    embedding-level accumulation would sum bf16 gradients). bf16 runs the forward passes under
    ``torch.autocast`` instead, with fp32 weights, gradients and optimizer state.
    """
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": False},
        "gradient_clipping": 0.0,
    }


def _base_encoder(cfg: TrainConfig, device: torch.device | str = "cpu") -> TextEncoder:
    return load_encoder(cfg.encoder, max_length=cfg.max_length, device=device)


def _load_training_prompts(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    return (load_prompts(cfg.safe_prompts, limit=cfg.max_pairs),
            load_prompts(cfg.unsafe_prompts, limit=cfg.max_pairs))


def _base_data(cfg: TrainConfig, enc: TextEncoder, *, progress: bool) -> BaseData:
    safe, unsafe = _load_training_prompts(cfg)
    return build_base_data(enc, safe_prompts=safe, unsafe_prompts=unsafe, concept=cfg.concept,
                           cache_dir=cfg.resolved_cache_dir(), progress=progress)


def prepare(cfg: TrainConfig, *, progress: bool = True, encoder: TextEncoder | None = None) -> BaseData:
    """Build (or load) everything the frozen encoder contributes, in ``cfg.cache_dir``: base
    embeddings, codebook, diagnostics prompts and the text evaluator's base data.

    Idempotent; a sweep calls it once in the driver so no trial pays for it.
    """
    enc = encoder or _base_encoder(cfg)
    base = _base_data(cfg, enc, progress=progress)
    factory = _text_evaluator_factory()
    if factory is not None:
        factory(enc, cfg)
    else:
        _geometry_base(enc, cfg)
    return base


def _geometry_base(enc: TextEncoder, cfg: TrainConfig) -> tuple[list[str], torch.Tensor]:
    from .cache import cached_embeddings

    prompts = load_prompts(cfg.diag_prompts, limit=cfg.diag_samples)
    if len(prompts) <= cfg.diag_k:
        raise ConfigError(f"diag_prompts={cfg.diag_prompts!r} has {len(prompts)} prompts; diag_k={cfg.diag_k} "
                          "needs more")
    return prompts, cached_embeddings(enc, prompts, cache_dir=cfg.resolved_cache_dir(), tag="diag")


def _text_evaluator_factory() -> Callable[[TextEncoder, TrainConfig], Callable[[TextEncoder], dict]] | None:
    """The text-level evaluator (asr_text, util_text, geometry) when the evaluation module is present."""
    try:
        from .evaluation import TextEvaluator, build_eval_config
    except ImportError:
        return None

    def make(enc: TextEncoder, cfg: TrainConfig):
        return TextEvaluator(enc, build_eval_config(cfg.eval_config_values()), cache_dir=cfg.resolved_cache_dir())

    return make


# --------------------------------------------------------------------------------------------
class Trainer:
    """Train an aligned text encoder with SAGE (or DES) on a DeepSpeed engine.

    ``Trainer(cfg, out_dir=...).fit()`` writes ``out_dir/checkpoints/step_NNNNNN`` folders and
    ``out_dir/log.jsonl`` (one JSON object per step and per evaluation).
    """

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

    # -- planning ------------------------------------------------------------------------
    def _plan(self, n_pairs: int) -> tuple[int, int]:
        cfg = self.cfg
        per_epoch = math.ceil(n_pairs / cfg.batch_size)
        total = per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        last = n_pairs % cfg.batch_size
        need = 0 if 1 not in cfg.des_terms else max(cfg.local_k + 1 if cfg.lambda_lsa > 0 else 0,
                                                     2 if cfg.lambda_esp > 0 else 0)
        if last and last < need and total >= per_epoch:
            raise ConfigError(
                f"batch_size={cfg.batch_size}: the last batch of each epoch has {last} pairs "
                f"({n_pairs} pairs in all), fewer than local_k + 1 = {need}; pick a batch size "
                f"that leaves >= {need} (or divides {n_pairs}), or set max_steps below {per_epoch}")
        return per_epoch, total

    def _batch_indices(self, step: int, n_pairs: int, per_epoch: int) -> tuple[int, np.ndarray]:
        epoch, b = divmod(step, per_epoch)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(n_pairs)
        return epoch, order[b * self.cfg.batch_size:(b + 1) * self.cfg.batch_size]

    # -- the run -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        safe_prompts, unsafe_prompts = _load_training_prompts(cfg)
        n_pairs = max(len(safe_prompts), len(unsafe_prompts))
        per_epoch, total = self._plan(n_pairs)
        start_step = int(self._resume_meta["step"]) if self._resume_meta else 0
        if start_step > total:
            raise ConfigError(f"resume_from={self.resume_from}: checkpoint step {start_step} is beyond "
                              f"this run's {total} steps")

        self._rank, self._world = rank, world = _dist_world()
        lead = rank == 0
        device = _resolve_device(cfg)
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        torch.manual_seed(cfg.seed)
        base_enc = _base_encoder(cfg, device)
        base = _base_data(cfg, base_enc, progress=self.progress)
        factory = _text_evaluator_factory() if self.evaluate_enabled and lead else None
        text_eval = factory(base_enc, cfg) if factory else None
        # The text evaluator reports the geometry itself; without it, compute just the geometry.
        diag_prompts, diag_base = (_geometry_base(base_enc, cfg) if text_eval is None and lead
                                   else ([], None))

        scale = (cfg.concept_guidance_ratio * base.mean_safe_norm() if cfg.concept_guidance_ratio
                 else float(cfg.concept_guidance_scale))
        weights = LossWeights(lambda_safe=cfg.lambda_safe, lambda_esp=cfg.lambda_esp, lambda_lsa=cfg.lambda_lsa,
                              local_k=cfg.local_k, alpha=cfg.alpha, scale=scale, des_terms=tuple(cfg.des_terms))

        # The trainable copy; E0 itself stays untouched (its outputs are all in the cache).
        trainable = TextEncoder(model=copy.deepcopy(base_enc.model), tokenizer=base_enc.tokenizer,
                                max_length=base_enc.max_length, is_clip=base_enc.is_clip, source=base_enc.source)
        if self.resume_from:
            missing = trainable.model.load_state_dict(load_weights(self.resume_from), strict=False)
            if missing.missing_keys:
                raise StorageError(f"resume_from={self.resume_from}: weights lack {missing.missing_keys[:3]}")
        self.encoder = trainable  # the live aligned encoder, for callers that evaluate it after fit()
        for p in trainable.model.parameters():
            p.requires_grad_(True)
        trainable.model.train()

        micro, accumulation = self._micro_plan(n_pairs, world, reaches_last_batch=total >= per_epoch)
        engine, optimizer = self._init_engine(trainable, micro=micro, accumulation=accumulation)
        self._autocast = bf16
        if self._resume_meta is not None:
            opt_state = load_optimizer_state(self.resume_from, self._resume_meta)
            if opt_state is not None and cfg.zero_stage == 0:
                optimizer.load_state_dict(opt_state)

        dev = engine.device
        safe_tok = trainable.tokenize(safe_prompts)
        unsafe_tok = trainable.tokenize(unsafe_prompts)
        concept_tok = trainable.tokenize([cfg.concept])
        v = base.direction.to(dev)
        u = base.empty.to(dev)
        b_all = base.safe
        m_all = base.safe[base.farthest]

        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = (self.out_dir / "log.jsonl").open("a", encoding="utf-8") if lead else None
        bar = None
        if self.progress and lead:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=start_step, desc=f"{cfg.method} training", unit="step",
                       dynamic_ncols=True)
        eval_every = cfg.eval_every or per_epoch
        ckpt_every = cfg.checkpoint_every or per_epoch
        window: dict[str, list[float]] = {}
        last_metrics: dict[str, float] = {}
        last_ckpt: Path | None = self.resume_from
        last_good: Path | None = self.resume_from
        pending: Path | None = None
        saved_step = start_step if self.resume_from else None  # the same on every rank
        stopped = False
        step = start_step
        try:
            while step < total:
                epoch, idx = self._batch_indices(step, n_pairs, per_epoch)
                s_idx = torch.as_tensor(idx % len(safe_prompts))
                u_idx = torch.as_tensor(idx % len(unsafe_prompts))
                batch = {
                    "safe": {k: t[s_idx].to(dev) for k, t in safe_tok.items()},
                    "unsafe": {k: t[u_idx].to(dev) for k, t in unsafe_tok.items()},
                    "concept": {k: t.to(dev) for k, t in concept_tok.items()},
                    "b": b_all[s_idx].to(dev),
                    "targets": unsafe_targets(m_all[u_idx].to(dev), v, scale),
                }
                terms = self._train_step(engine, batch, v=v, u=u, w=weights, accumulation=accumulation)
                if not all(math.isfinite(x) for x in terms.values()):
                    # The weights of a checkpoint are good once the next loss they produce is finite.
                    if pending is not None:
                        shutil.rmtree(pending, ignore_errors=True)
                    bad = {k: x for k, x in terms.items() if not math.isfinite(x)}
                    keep = (f"; the last good checkpoint is {last_good} (resume from it with a lower lr)"
                            if last_good else "; no checkpoint was good")
                    raise NonFiniteLossError(f"non-finite loss at step {step + 1}: {bad}{keep}")
                if pending is not None:
                    last_good, pending = pending, None
                engine.step()
                step += 1
                for k, x in terms.items():
                    window.setdefault(k, []).append(x)
                wall = time.perf_counter() - t_start
                info = StepInfo(step=step, epoch=epoch, total_steps=total, losses=terms, wall_s=wall)
                if log is not None:
                    log.write(json.dumps({"step": step, "epoch": epoch, **terms}) + "\n")
                for cb in self.callbacks:
                    cb.on_step(info)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k.removeprefix("loss_") or "loss": f"{x:.4f}" for k, x in terms.items()},
                                    refresh=False)
                is_eval = step % eval_every == 0 or step == total
                is_ckpt = is_eval or step % ckpt_every == 0
                ckpt = None
                if is_ckpt:
                    ckpt = self._save(trainable, optimizer, step=step, epoch=epoch, scale=scale,
                                      metrics=last_metrics, protect=last_good)
                    saved_step = step
                    if ckpt is not None:
                        last_ckpt = pending = ckpt
                        for cb in self.callbacks:
                            cb.on_checkpoint(ckpt, step)
                if is_eval:
                    metrics = {k: float(np.mean(xs)) for k, xs in window.items()}
                    window.clear()
                    if lead:
                        metrics.update(self._evaluate(trainable, diag_base, diag_prompts, text_eval))
                    metrics["concept_guidance_scale"] = scale
                    last_metrics = metrics
                    if ckpt is not None:
                        (ckpt / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
                    if log is not None:
                        log.write(json.dumps({"step": step, "eval": metrics}) + "\n")
                        log.flush()
                    if bar is not None:
                        shown = {k: metrics[k] for k in ("loss", "concept_auc", "util_sib", "spread_ratio", "jaccard")
                                 if k in metrics}
                        bar.write(f"step {step}/{total}: " + ", ".join(f"{k} {x:.4f}" for k, x in shown.items()))
                    einfo = EvalInfo(step=step, epoch=epoch, total_steps=total, metrics=metrics, checkpoint=ckpt,
                                     wall_s=time.perf_counter() - t_start)
                    if self._agree(any([cb.on_evaluate(einfo) for cb in self.callbacks])):
                        stopped = step < total
                        break
        finally:
            if log is not None:
                log.close()
            if bar is not None:
                bar.close()
        if saved_step != step:
            last_ckpt = self._save(trainable, optimizer, step=step, epoch=step // per_epoch, scale=scale,
                                   metrics=last_metrics)
        return TrainResult(final_checkpoint=last_ckpt, step=step, metrics=last_metrics, stopped_early=stopped,
                           concept_guidance_scale=scale, wall_s=time.perf_counter() - t_start)

    # -- pieces --------------------------------------------------------------------------
    def _micro_plan(self, n_pairs: int, world: int, *, reaches_last_batch: bool = True) -> tuple[int, int]:
        """(pairs per forward on one rank, forwards per rank per step) for ``world`` ranks."""
        cfg = self.cfg
        if cfg.batch_size % world:
            raise ConfigError(f"batch_size={cfg.batch_size} must be a multiple of the {world} data-parallel "
                              f"workers (each embeds an equal share of the batch)")
        per_rank = cfg.batch_size // world
        micro = min(cfg.micro_batch_size or per_rank, per_rank)
        accumulation = math.ceil(per_rank / micro)
        last = n_pairs % cfg.batch_size
        if last and reaches_last_batch and last < world * accumulation:
            raise ConfigError(f"batch_size={cfg.batch_size}: the last batch of each epoch has {last} pairs, fewer "
                              f"than {world} worker(s) x {accumulation} micro-batch(es); pick a batch size that "
                              f"divides {n_pairs} or a larger micro_batch_size")
        return math.ceil(per_rank / accumulation), accumulation

    def _agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if self._world == 1:
            return flag
        t = torch.tensor([1 if flag else 0])
        torch.distributed.broadcast(t, src=0)
        return bool(t.item())

    _rank, _world = 0, 1

    def _init_engine(self, enc: TextEncoder, *, micro: int, accumulation: int):
        import deepspeed

        cfg = self.cfg
        module = enc.module()
        optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                      eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        with _single_process_env():
            engine, ds_opt, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizer,
                config=deepspeed_config(cfg, micro_batch=micro, accumulation=accumulation))
        # Checkpoints serialise the wrapped torch optimizer's moments (ZeRO 0).
        return engine, optimizer if cfg.zero_stage == 0 else ds_opt

    _autocast = False

    def _forward(self, engine, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device_type=engine.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            return engine(tokens["input_ids"], tokens["attention_mask"]).float()

    def _train_step(self, engine, batch: dict[str, Any], *, v: torch.Tensor, u: torch.Tensor, w: LossWeights,
                    accumulation: int) -> dict[str, float]:
        rank, world = self._rank, self._world
        if accumulation == 1 and world == 1:
            e = self._forward(engine, batch["safe"])
            e_u = self._forward(engine, batch["unsafe"])
            e_c = self._forward(engine, batch["concept"])
            loss, terms = sage_loss(e=e, b=batch["b"], e_unsafe=e_u, targets=batch["targets"], e_concept=e_c,
                                    u=u, v=v, w=w)
            engine.backward(loss)
            return {k: float(t) for k, t in terms.items()}
        # Embedding-level accumulation (and data parallelism): exact gradient of the full-batch loss.
        sizes = [len(c) for c in torch.tensor_split(torch.arange(len(batch["b"])), world)]
        safe_chunks = _split(_split(batch["safe"], world)[rank], accumulation)
        unsafe_chunks = _split(_split(batch["unsafe"], world)[rank], accumulation)
        with torch.no_grad():
            e = _all_gather_rows(torch.cat([self._forward(engine, c) for c in safe_chunks]), sizes)
            e_u = _all_gather_rows(torch.cat([self._forward(engine, c) for c in unsafe_chunks]), sizes)
            e_c = self._forward(engine, batch["concept"])
        leaves = [x.detach().requires_grad_(True) for x in (e, e_u, e_c)]
        loss, terms = sage_loss(e=leaves[0], b=batch["b"], e_unsafe=leaves[1], targets=batch["targets"],
                                e_concept=leaves[2], u=u, v=v, w=w)
        g_e, g_u, g_c = torch.autograd.grad(loss, leaves, allow_unused=True)
        g_e, g_u, g_c = (torch.zeros_like(x) if g is None else g for g, x in zip((g_e, g_u, g_c), leaves))
        lo = sum(sizes[:rank])
        ge_chunks = torch.tensor_split(g_e[lo:lo + sizes[rank]], accumulation)
        gu_chunks = torch.tensor_split(g_u[lo:lo + sizes[rank]], accumulation)
        for j in range(accumulation):
            surrogate = (self._forward(engine, safe_chunks[j]) * ge_chunks[j]).sum()
            surrogate = surrogate + (self._forward(engine, unsafe_chunks[j]) * gu_chunks[j]).sum()
            if j == 0 and rank == 0:
                surrogate = surrogate + (self._forward(engine, batch["concept"]) * g_c).sum()
            # DeepSpeed divides each micro-batch loss by the accumulation count and averages the
            # gradients over the ranks; undo both.
            engine.backward(surrogate * (accumulation * world))
            if j < accumulation - 1:
                engine.step()  # not a boundary: DeepSpeed only counts the micro-step
        return {k: float(t) for k, t in terms.items()}

    @torch.no_grad()
    def _evaluate(self, enc: TextEncoder, diag_base: torch.Tensor | None, diag_prompts: list[str],
                  text_eval: Callable[[TextEncoder], dict[str, float]] | None) -> dict[str, float]:
        was = enc.model.training
        if text_eval is not None:
            metrics = dict(text_eval(enc))
        else:
            metrics = geometry_report(enc.embed(diag_prompts), diag_base, k=self.cfg.diag_k)
        enc.model.train(was)
        return metrics

    def _save(self, enc: TextEncoder, optimizer, *, step: int, epoch: int, scale: float,
              metrics: dict[str, float], protect: Path | None = None) -> Path | None:
        """Rank 0 writes the checkpoint (others return None; under ZeRO-3 all ranks gather)."""
        path = self.out_dir / "checkpoints" / f"step_{step:06d}"
        if self._rank != 0 and self.cfg.zero_stage != 3:
            return None
        opt_state = optimizer.state_dict() if self.cfg.zero_stage == 0 else None
        meta = {"config": self.cfg.to_dict(), "step": step, "epoch": epoch, "seed": self.cfg.seed,
                "code_version": code_version(), "concept_guidance_scale": scale, "metrics": metrics,
                "exact_resume": opt_state is not None}
        if self.cfg.zero_stage == 3:  # ZeRO-3 partitions the weights: gather them to save them whole
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(enc.model.parameters()), modifier_rank=None):
                if self._rank != 0:
                    return None
                save_checkpoint(path, model=enc.model, tokenizer=enc.tokenizer, meta=meta, optimizer_state=None)
        else:
            save_checkpoint(path, model=enc.model, tokenizer=enc.tokenizer, meta=meta, optimizer_state=opt_state)
        for old in list_checkpoints(self.out_dir)[:-self.cfg.keep_checkpoints]:
            if old not in (path, protect):
                shutil.rmtree(old, ignore_errors=True)
        return path


def _split(tokens: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    parts = {k: torch.tensor_split(t, n) for k, t in tokens.items()}
    return [{k: parts[k][i] for k in tokens} for i in range(n)]


def train(cfg: TrainConfig, *, out_dir: str | os.PathLike, callbacks: Sequence[TrainerCallback] = (),
          resume_from: str | os.PathLike | None = None, progress: bool = True) -> TrainResult:
    """Python entry point: ``sage_core.train(cfg, out_dir=...)``."""
    return Trainer(cfg, out_dir=out_dir, callbacks=callbacks, resume_from=resume_from, progress=progress).fit()


def _init_deepspeed_probe() -> None:
    """Initialise one tiny DeepSpeed engine (builds/loads DeepSpeed's CPU op cache)."""
    import deepspeed

    module = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    with _single_process_env():
        deepspeed.initialize(model=module, optimizer=opt,
                             config={"train_micro_batch_size_per_gpu": 1, "steps_per_print": 10**12})
