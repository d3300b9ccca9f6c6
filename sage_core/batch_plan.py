"""Which pairs each optimiser step sees, and how a step is cut into forwards.

Each epoch visits every pair once in a seeded order, ``batch_size`` pairs a step; the last batch of
an epoch holds the ``pairs % batch_size`` left over. That batch must still be big enough for the
losses and the split computed on it, and this module holds that one rule (:func:`last_batch_needs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .defs.config import TrainConfig
from .defs.errors import ConfigError

__all__ = ["BatchPlan", "plan_batches", "last_batch_needs"]


@dataclass(frozen=True)
class BatchPlan:
    """Steps of a run and the shape of each step on one of ``world`` data-parallel ranks."""

    pairs: int  # (safe, unsafe) pairs in the training data
    batch_size: int
    seed: int
    per_epoch: int  # steps per epoch (the last one partial when batch_size does not divide pairs)
    total: int  # steps of the run
    micro: int  # pairs per forward on one rank
    accumulation: int  # forwards per rank per step

    def batch(self, step: int) -> tuple[int, np.ndarray]:
        """(epoch, indices of the pairs) of the 0-based ``step``."""
        epoch, b = divmod(step, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.pairs)
        return epoch, order[b * self.batch_size:(b + 1) * self.batch_size]


def last_batch_needs(cfg: TrainConfig, *, world: int, accumulation: int | None) -> dict[str, int]:
    """What a (partial) batch must hold, each reason with its minimum number of pairs.

    LSA picks ``local_k`` neighbours of each prompt within the batch and ESP compares spreads over
    it (both act on DES term 1 only); every rank embeds an equal share in ``accumulation`` forwards
    (None: the batch does not split over the ranks, which :func:`plan_batches` reports on its own).
    """
    needs = {}
    if 1 in cfg.des_terms and cfg.lambda_lsa > 0:
        needs[f"local_k + 1 = {cfg.local_k + 1} (LSA neighbours)"] = cfg.local_k + 1
    if 1 in cfg.des_terms and cfg.lambda_esp > 0:
        needs["2 (ESP spread)"] = 2
    if accumulation is not None:
        needs[f"{world} worker(s) x {accumulation} micro-batch(es)"] = world * accumulation
    return needs


def _split(cfg: TrainConfig, world: int) -> tuple[int, int] | None:
    """(pairs per forward, forwards per step) on one of ``world`` ranks; None if the batch does not split."""
    if cfg.batch_size % world:
        return None
    per_rank = cfg.batch_size // world
    accumulation = math.ceil(per_rank / min(cfg.micro_batch_size or per_rank, per_rank))
    return math.ceil(per_rank / accumulation), accumulation


def plan_batches(cfg: TrainConfig, *, pairs: int, world: int) -> BatchPlan:
    """The run's plan, or a ConfigError naming what to change.

    A run that stops (``max_steps``) before the end of its first epoch never sees the partial batch.
    """
    per_epoch = math.ceil(pairs / cfg.batch_size)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs, cfg.max_steps)
    last = pairs % cfg.batch_size
    split = _split(cfg, world)
    needs = last_batch_needs(cfg, world=world, accumulation=split[1] if split else None)
    need = max(needs.values(), default=0)
    if last and last < need and total >= per_epoch:
        why = "; ".join(reason for reason, n in needs.items() if n > last)
        raise ConfigError(
            f"batch_size={cfg.batch_size}: the last batch of each epoch has {last} pairs ({pairs} pairs in all), "
            f"fewer than {why}; pick a batch size that divides {pairs} or leaves >= {need}, a larger "
            f"micro_batch_size, or max_steps below {per_epoch}")
    if split is None:
        raise ConfigError(f"batch_size={cfg.batch_size} must be a multiple of the {world} data-parallel "
                          f"workers (each embeds an equal share of the batch)")
    return BatchPlan(pairs=pairs, batch_size=cfg.batch_size, seed=cfg.seed, per_epoch=per_epoch, total=total,
                     micro=split[0], accumulation=split[1])
