"""The gradient of one optimiser step: the full-batch SAGE loss, however the batch is cut.

ESP and LSA are batch-level losses (a spread and a neighbourhood over the whole batch), so
ordinary micro-batch gradient accumulation would change the method. With several forwards per step
(``accumulation`` > 1) or several ranks, the step embeds the batch without a graph (each rank its
shard, all-gathered), takes the loss gradient with respect to the embeddings, then re-runs each
micro-batch with a graph and back-propagates that gradient (``engine.backward`` once per
micro-batch). DeepSpeed's all-reduce then yields the gradient of the full-batch loss on every rank,
on memory for one micro-batch.
"""

from __future__ import annotations

from typing import Any

import torch

from .defs.errors import ConfigError
from .distributed import all_gather_rows, split_tokens
from .losses import LossWeights, sage_loss
from .precision import widen

__all__ = ["forward", "backward_full_batch"]


def forward(engine, tokens: dict[str, torch.Tensor], *, autocast: bool) -> torch.Tensor:
    """Token embeddings in fp32 (bf16 forwards under autocast when ``autocast``; fp64 for an fp64 encoder)."""
    with torch.autocast(device_type=engine.device.type, dtype=torch.bfloat16, enabled=autocast):
        return widen(engine(tokens["input_ids"], tokens["attention_mask"]))


def backward_full_batch(engine, batch: dict[str, Any], *, v: torch.Tensor, u: torch.Tensor, w: LossWeights,
                        accumulation: int, rank: int = 0, world: int = 1, autocast: bool = False) -> dict[str, float]:
    """Back-propagate the full-batch loss of ``batch`` (this rank's view) and return its terms.

    The caller's ``engine.step()`` closes the step; the micro-steps before it happen here.
    """
    if accumulation == 1 and world == 1:
        e, e_u, e_c = (forward(engine, batch[k], autocast=autocast) for k in ("safe", "unsafe", "concept"))
        adv = batch.get("adv")  # adversarial training (sage_core.adversarial): one forward per step only
        loss, terms = sage_loss(e=e, b=batch["b"], e_unsafe=e_u, targets=batch["targets"], e_concept=e_c,
                                u=u, v=v, w=w, e_adv=None if adv is None else forward(engine, adv, autocast=autocast),
                                adv_targets=None if adv is None else batch["targets"][adv["rows"]])
        engine.backward(loss)
        return {k: float(t) for k, t in terms.items()}
    if batch.get("adv") is not None:
        raise ConfigError("lambda_adv > 0 needs one forward per step on one rank (no micro-batches, no data "
                          "parallelism); set lambda_adv to 0 or train on one rank without micro_batch_size")
    sizes = [len(c) for c in torch.tensor_split(torch.arange(len(batch["b"])), world)]
    safe_chunks = split_tokens(split_tokens(batch["safe"], world)[rank], accumulation)
    unsafe_chunks = split_tokens(split_tokens(batch["unsafe"], world)[rank], accumulation)
    with torch.no_grad():
        e = all_gather_rows(torch.cat([forward(engine, c, autocast=autocast) for c in safe_chunks]), sizes)
        e_u = all_gather_rows(torch.cat([forward(engine, c, autocast=autocast) for c in unsafe_chunks]), sizes)
        e_c = forward(engine, batch["concept"], autocast=autocast)
    leaves = [x.detach().requires_grad_(True) for x in (e, e_u, e_c)]
    loss, terms = sage_loss(e=leaves[0], b=batch["b"], e_unsafe=leaves[1], targets=batch["targets"],
                            e_concept=leaves[2], u=u, v=v, w=w)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    g_e, g_u, g_c = (torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True))
    lo = sum(sizes[:rank])
    ge_chunks = torch.tensor_split(g_e[lo:lo + sizes[rank]], accumulation)
    gu_chunks = torch.tensor_split(g_u[lo:lo + sizes[rank]], accumulation)
    for j in range(accumulation):
        surrogate = (forward(engine, safe_chunks[j], autocast=autocast) * ge_chunks[j]).sum()
        surrogate = surrogate + (forward(engine, unsafe_chunks[j], autocast=autocast) * gu_chunks[j]).sum()
        if j == 0 and rank == 0:
            surrogate = surrogate + (forward(engine, batch["concept"], autocast=autocast) * g_c).sum()
        # DeepSpeed divides each micro-batch loss by the accumulation count and averages the
        # gradients over the ranks; undo both.
        engine.backward(surrogate * (accumulation * world))
        if j < accumulation - 1:
            engine.step()  # not a boundary: DeepSpeed only counts the micro-step
    return {k: float(t) for k, t in terms.items()}
