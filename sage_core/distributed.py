"""DeepSpeed and ``torch.distributed`` plumbing: the launcher environment, the process group,
the engine, collectives the trainer needs, and the probe ``sage doctor`` runs.

DeepSpeed reaches for MPI unless RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are set;
a single process fills in the missing ones (gloo on CPU) for the initialisation only.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .build_lock import check_build_locks
from .defs.config import TrainConfig
from .defs.errors import ConfigError

__all__ = ["free_port", "single_process_env", "group_exists", "import_group_holders", "process_group",
           "release_engine", "end_process_group", "agree", "all_gather_rows", "split_tokens", "resolve_device",
           "deepspeed_config", "initialize_engine", "deepspeed_probe"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def single_process_env() -> Iterator[None]:
    """Fill in the missing DeepSpeed variables. The port (a free one, so concurrent trials never
    collide) is set for the block only, so processes started later do not inherit a port this one holds."""
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    added_port = "MASTER_PORT" not in os.environ
    if added_port:
        os.environ["MASTER_PORT"] = str(free_port())
    try:
        yield
    finally:
        if added_port:
            os.environ.pop("MASTER_PORT", None)


def group_exists() -> bool:
    """A ``torch.distributed`` default group is initialised in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def import_group_holders() -> None:
    """Import, before a group starts, the modules that bind ``GroupMember.WORLD`` as a default
    argument when imported: ``deepspeed.comm`` (TorchBackend.barrier) and ``torch.distributed.nn``
    (its functional collectives, which DeepSpeed's engine imports). Imported after a group started,
    they would hold that group, and its gloo threads, until interpreter exit (issue 27)."""
    check_build_locks()  # DeepSpeed builds its CPU op next; a killed build's lock would hang it forever
    import deepspeed.comm  # noqa: F401  # lazy: deepspeed (~1 s), just before a group starts (issue 27)
    import torch.distributed.nn  # noqa: F401  # lazy: with deepspeed.comm, just before a group starts (issue 27)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the ``torch.distributed`` group: the one already initialised (Ray Train),
    else one started from a launcher's environment (``WORLD_SIZE`` > 1: deepspeed, torchrun), else (0, 1)."""
    if not group_exists():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        import deepspeed  # lazy: deepspeed (~1 s), only for training or the DeepSpeed probe

        import_group_holders()
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def release_engine(engine: Any, *, keep_weights: bool) -> None:
    """Take a DeepSpeed engine apart so nothing keeps it (and through it every process group) alive.

    ``keep_weights`` (on success only: it is a collective, and after a failure a peer may be gone):
    under ZeRO-3 the full weights are gathered first and put back into the module, so the trained
    module stays usable without the engine. Then DeepSpeed's ``destroy`` (optimizer hooks and buffers)
    and the removal of the forward hooks the engine put on the module, which ``destroy`` leaves.
    """
    whole = _gathered_zero3_weights(engine.module) if keep_weights else []
    engine.destroy()
    for hook in (getattr(engine, "module_forward_pre_hook", None), getattr(engine, "module_forward_post_hook", None)):
        if hook is not None:
            hook.remove()
    for param, data in whole:
        param.data = data


def end_process_group() -> None:
    """End this process's ``torch.distributed`` groups now, while the interpreter is whole (issue 27).

    For the group a run started itself only: under Ray Train, or a group the caller made, the group is
    theirs. DeepSpeed's ``destroy_process_group`` destroys torch's groups and drops DeepSpeed's own
    references to them (a later run in this process starts afresh); the collection then drops the last
    references (cycles through a released engine), so gloo joins its worker and I/O threads here, not
    during interpreter finalisation (the suspected path of the abort at exit). No barrier first: after
    a failure a peer may be gone, and gloo's teardown is local to this process.

    One reference this cannot drop: a module that binds the world group as a default argument when
    it is imported after the group started (see :func:`import_group_holders`, which the trainer calls
    before it starts one, and so should whoever starts a group before the trainer).
    """
    if not group_exists():
        return
    import deepspeed.comm  # lazy: deepspeed (~1 s), only for training or the DeepSpeed probe

    if deepspeed.comm.is_initialized():
        deepspeed.comm.destroy_process_group()
    else:  # started from the launcher's environment, never taken up by DeepSpeed
        torch.distributed.destroy_process_group()
    gc.collect()


def _gathered_zero3_weights(module: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(parameter, its full value) for every ZeRO-3 partitioned parameter of ``module`` (every rank gathers)."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        return []
    import deepspeed  # lazy: deepspeed (~1 s), only for training or the DeepSpeed probe

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        return [(p, p.data.clone()) for p in params]


def agree(flag: bool, *, world: int) -> bool:
    """Rank 0's decision, on every rank."""
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0])
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def all_gather_rows(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Concatenate every rank's rows (rank r holds ``sizes[r]`` of them) on every rank."""
    if len(sizes) == 1:
        return x
    width = max(sizes)
    padded = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def split_tokens(tokens: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """``n`` consecutive row slices of a tokenizer output (``torch.tensor_split`` sizes)."""
    parts = {k: torch.tensor_split(t, n) for k, t in tokens.items()}
    return [{k: parts[k][i] for k in tokens} for i in range(n)]


def resolve_device(cfg: TrainConfig) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is asked for (or ``auto`` and visible), else CPU."""
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


def initialize_engine(module: torch.nn.Module, cfg: TrainConfig, *, micro: int, accumulation: int):
    """(DeepSpeed engine, the optimizer whose state a checkpoint saves) with AdamW from ``cfg``.

    Under ZeRO 0 that is the wrapped torch optimizer (its moments are the exact-resume state);
    under ZeRO 1-3 DeepSpeed's partitioned one.
    """
    import deepspeed  # lazy: deepspeed (~1 s), only for training or the DeepSpeed probe

    import_group_holders()  # deepspeed.initialize starts the group of a single process
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, betas=(cfg.adam_betas[0], cfg.adam_betas[1]),
                                  eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    with single_process_env():
        engine, ds_opt, _, _ = deepspeed.initialize(
            model=module, optimizer=optimizer,
            config=deepspeed_config(cfg, micro_batch=micro, accumulation=accumulation))
    if cfg.precision == "fp64":
        # DeepSpeed's accelerators all-reduce only fp32/bf16/fp16 gradients; an fp64 run is a single
        # process (the trainer refuses more ranks before building anything), with nothing to reduce.
        engine.enable_backward_allreduce = False
    return engine, optimizer if cfg.zero_stage == 0 else ds_opt


def deepspeed_probe() -> None:
    """Initialise one tiny DeepSpeed engine on this machine (builds or loads DeepSpeed's CPU op
    cache, so later runs start fast). Raises what DeepSpeed raises when it cannot."""
    check_build_locks()
    import deepspeed  # lazy: deepspeed (~1 s), only for training or the DeepSpeed probe

    module = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    with single_process_env():
        deepspeed.initialize(model=module, optimizer=opt,
                             config={"train_micro_batch_size_per_gpu": 1, "steps_per_print": 10**12})
