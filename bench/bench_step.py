"""Step-time benchmark of the SAGE trainer, measured side by side in one run.

Prints, for the embedded MiniLM encoder at length 32 on this machine:
  * ours / floor: our full SAGE step (cached base data, codebook targets, all six loss terms,
    DeepSpeed engine step) over the bare forward+backward+step of the trainable encoder on the
    same token batches (target <= 1.15);
  * reference / ours: a reference-style loop (as the official scripts: tokenise every batch and
    re-embed the safe prompts with the frozen encoder every step) over ours;
  * per-step time and peak resident memory at batch 16 and 128 (each size in its own process).

With ``--encoder sd14-init`` it instead runs the paper's scale: one SAGE step of the paper preset
(fp32, batch 128, 77 tokens) on the SD-v1.4-shaped CLIP text encoder (123M parameters, random
weights), and prints seconds per step, peak memory, the FLOPs of the step (counted with
``torch.utils.flop_counter.FlopCounterMode`` on a meta-device copy: shapes only) and the projection
to one GPU (the FLOP-bound time at the device's spec peak, and the memory from the measured
activation bytes per sequence). On CPU the batch runs in micro-batches (``--micro``, default 16;
exact full-batch gradients) so it fits in memory; the projection is for the unsplit batch.

Usage: python bench/bench_step.py [--batch 16 128] [--steps 6] [--length 32]
       python bench/bench_step.py --encoder sd14-init [--batch 128] [--micro 16] [--steps 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class _Rig:
    """The trainer's own step outside ``Trainer.setup``: a trainable copy of the base encoder on a
    DeepSpeed engine, the cached base data and the tokenised prompts, cut into batches by index."""

    trainer: Any
    engine: Any
    base_enc: Any
    trainable: Any
    base: Any
    w: Any
    safe: list[str]
    unsafe: list[str]
    tok: dict[str, dict[str, Any]]
    batch: int
    accumulation: int
    dev: Any
    base_s: float
    v: Any = field(init=False)  # the concept direction, on the device
    u: Any = field(init=False)  # f0(empty prompt), on the device
    m_all: Any = field(init=False)  # f0 of each safe prompt's farthest codebook entry

    def __post_init__(self) -> None:
        self.v, self.u = self.base.direction.to(self.dev), self.base.empty.to(self.dev)
        self.m_all = self.base.safe[self.base.farthest]

    def batch_at(self, i: int) -> dict:
        import torch

        idx = torch.arange(i * self.batch, (i + 1) * self.batch)
        return {"safe": {k: x[idx].to(self.dev) for k, x in self.tok["safe"].items()},
                "unsafe": {k: x[idx].to(self.dev) for k, x in self.tok["unsafe"].items()},
                "concept": self.tok["concept"], "b": self.base.safe[idx].to(self.dev),
                "targets": self.targets(idx)}

    def targets(self, idx) -> Any:
        from sage_core.losses import unsafe_targets

        return unsafe_targets(self.m_all[idx].to(self.dev), self.v, self.w.scale)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One SAGE step through the trainer's own step function, then the engine's optimiser step."""
        terms = self.trainer._train_step(self.engine, batch, v=self.v, u=self.u, w=self.w,
                                         accumulation=self.accumulation)
        self.engine.step()
        return terms


def _rig(cfg, *, encoder: str, n: int, length: int, dev, out_dir: str, micro: int | None = None,
         autocast: bool = False) -> _Rig:
    """Load ``n`` prompt pairs, build the base data (timed) and the engine of a trainable copy."""
    import copy

    from sage_core.codebook import build_base_data
    from sage_core.data import load_prompts
    from sage_core.encoders import TextEncoder, load_encoder
    from sage_core.losses import LossWeights
    from sage_core.trainer import Trainer

    batch = cfg.batch_size
    safe, unsafe = load_prompts("copro-safe", limit=n), load_prompts("copro-unsafe", limit=n)
    base_enc = load_encoder(encoder, max_length=length, device=dev)
    t = time.perf_counter()
    base = build_base_data(base_enc, safe_prompts=safe, unsafe_prompts=unsafe, concept=cfg.concept,
                           cache_dir=cfg.resolved_cache_dir())
    base_s = time.perf_counter() - t
    trainable = TextEncoder(model=copy.deepcopy(base_enc.model), tokenizer=base_enc.tokenizer, max_length=length,
                            is_clip=base_enc.is_clip, source=encoder)
    trainable.model.train()
    trainer = Trainer(cfg, out_dir=out_dir, progress=False)
    accumulation = batch // (micro or batch)
    engine, _ = trainer._init_engine(trainable, micro=micro or batch, accumulation=accumulation)
    trainer._autocast = autocast
    tok = {"safe": trainable.tokenize(safe), "unsafe": trainable.tokenize(unsafe),
           "concept": {k: x.to(dev) for k, x in trainable.tokenize([cfg.concept]).items()}}
    return _Rig(trainer=trainer, engine=engine, base_enc=base_enc, trainable=trainable, base=base,
                w=LossWeights.from_config(cfg, mean_safe_norm=base.mean_safe_norm), safe=safe, unsafe=unsafe,
                tok=tok, batch=batch, accumulation=accumulation, dev=dev, base_s=base_s)


def _measure(batch: int, steps: int, length: int) -> dict[str, float]:
    import torch

    from sage_core.defs.config import load_config

    cfg = load_config(preset="quickstart", overrides={"batch_size": batch, "max_length": length,
                                                      "local_k": min(10, batch - 1)})
    rig = _rig(cfg, encoder="minilm", n=max(batch * (steps + 2), 256), length=length, dev=torch.device("cpu"),
               out_dir="/tmp/bench-step")
    engine, frozen = rig.engine, rig.base_enc.module().eval()

    def floor(i: int) -> None:
        bt = rig.batch_at(i)
        loss = sum(engine(t["input_ids"], t["attention_mask"]).float().mean()
                   for t in (bt["safe"], bt["unsafe"], bt["concept"]))
        engine.backward(loss)
        engine.step()

    def reference(i: int) -> None:
        # What the official loop does each step: tokenise text and re-embed the safe batch with E0.
        sl = slice(i * batch, (i + 1) * batch)
        tok_s, tok_u = rig.trainable.tokenize(rig.safe[sl]), rig.trainable.tokenize(rig.unsafe[sl])
        with torch.no_grad():
            b = frozen(tok_s["input_ids"], tok_s["attention_mask"])
        rig.train_step({"safe": tok_s, "unsafe": tok_u, "concept": rig.trainable.tokenize([cfg.concept]), "b": b,
                        "targets": rig.targets(torch.arange(sl.start, sl.stop))})

    med = _interleaved_medians({"ours": lambda i: rig.train_step(rig.batch_at(i)), "floor": floor,
                                "reference": reference}, steps=steps)
    return {"batch": batch, "length": length, **{f"{k}_s": v for k, v in med.items()},
            "ours_over_floor": med["ours"] / med["floor"], "reference_over_ours": med["reference"] / med["ours"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _interleaved_medians(fns: dict[str, Callable[[int], Any]], *, steps: int) -> dict[str, float]:
    """Median seconds of each function over ``steps`` steps after one warm-up step each; interleaved,
    so load changes hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn(0)
    for i in range(1, steps + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", choices=("minilm", "sd14-init"), default="minilm")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="default 16 128 (minilm), 128 (sd14-init)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps; default 6 (minilm), 1 (sd14-init)")
    ap.add_argument("--length", type=int, default=None, help="default 32 (minilm), 77 (sd14-init)")
    ap.add_argument("--micro", type=int, default=16, help="sd14-init: micro-batch size (0 = unsplit)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.encoder == "sd14-init":
        _print_paper_step(paper_step(batch=(args.batch or [128])[0], length=args.length or 77,
                                     micro=args.micro or None, steps=args.steps or 1, warmup=0))
        return
    args.batch, args.steps, args.length = args.batch or [16, 128], args.steps or 6, args.length or 32
    if args.child:
        print(json.dumps(_measure(args.batch[0], args.steps, args.length)))
        return
    print(f"machine: {os.cpu_count()} CPUs, torch threads default; MiniLM, length {args.length}, "
          f"median of {args.steps} interleaved steps")
    print(f"{'batch':>5} {'ours s':>8} {'floor s':>8} {'ref s':>8} {'ours/floor':>10} {'ref/ours':>9} {'peak MiB':>9}")
    for b in args.batch:
        out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(b), "--steps", str(args.steps),
                              "--length", str(args.length)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(out.returncode)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{b:>5} {r['ours_s']:>8.3f} {r['floor_s']:>8.3f} {r['reference_s']:>8.3f} "
              f"{r['ours_over_floor']:>10.3f} {r['reference_over_ours']:>9.2f} {r['peak_rss_mib']:>9.0f}")



# --------------------------------------------------------------------------------------------
# The paper's scale on sd14-init (also `bench/gpu_check.py`'s training part).

#: Dense spec peaks (TFLOP/s) by device-name fragment, first match wins: fp32 (no TF32) and bf16.
SPEC_PEAK_TFLOPS = {"H100 PCIe": {"fp32": 51.2, "bf16": 756.0}, "H100": {"fp32": 66.9, "bf16": 989.4},
                    "H200": {"fp32": 66.9, "bf16": 989.4}, "A100": {"fp32": 19.5, "bf16": 312.0},
                    "L40S": {"fp32": 91.6, "bf16": 362.0}}

#: What one paper run is: copro-safe gives 54 steps of 128 pairs per epoch, 2 epochs.
PAPER_STEPS = 108


def spec_peak_tflops(device_name: str, precision: str) -> float | None:
    for fragment, peaks in SPEC_PEAK_TFLOPS.items():
        if fragment in device_name:
            return peaks[precision]
    return None


def step_flops(config, *, batch: int, length: int, accumulation: int) -> dict[str, float]:
    """FLOPs of one trainer step on a CLIP text model of ``config``, counted on a meta-device copy
    (shapes, no data).

    The step embeds 2B+1 sequences (safe, unsafe, concept) forward and backward; with
    micro-batches (accumulation > 1) it first embeds them once more without a graph.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel(config)
    ids = torch.zeros(2 * batch + 1, length, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(input_ids=ids)
    with FlopCounterMode(display=False) as fwd_bwd:
        model(input_ids=ids)[0].float().sum().backward()
    unsplit = float(fwd_bwd.get_total_flops())
    return {"unsplit": unsplit, "as_run": unsplit + (float(fwd.get_total_flops()) if accumulation > 1 else 0.0)}


def saved_bytes_per_sequence(model, *, length: int, device, autocast: bool) -> float:
    """Activation bytes autograd keeps per sequence of ``length`` tokens (weights excluded)."""
    import torch

    params = {p.data_ptr() for p in model.parameters()}

    def saved(n: int) -> int:
        seen: dict[int, int] = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = t.untyped_storage().nbytes()
            return t

        ids = torch.zeros(n, length, dtype=torch.long, device=device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=ids)
        return sum(seen.values())

    return float(saved(2) - saved(1))


def paper_step(*, batch: int = 128, length: int = 77, micro: int | None = None, steps: int = 1, warmup: int = 1,
               precision: str = "fp32", cache_dir: str | None = None,
               encoder: str = "sd14-init") -> dict[str, float | str | None]:
    """Time ``steps`` SAGE steps of the paper preset on sd14-init (after ``warmup`` untimed ones).

    ``encoder``: another CLIP text encoder (a folder), e.g. a tiny one for a smoke test.

    Uses the trainer's own step (cached base data, codebook targets, all six loss terms, DeepSpeed
    engine step) on the default device. Returns seconds per step, peak memory, counted FLOPs.
    """
    import tempfile

    import torch

    from sage_core.defs.config import load_config

    tmp = tempfile.mkdtemp(prefix="sage-paper-step-")
    cfg = load_config(preset="paper", overrides={
        "encoder": encoder, "batch_size": batch, "max_length": length, "local_k": min(15, batch - 1),
        "micro_batch_size": micro, "precision": precision, "cache_dir": cache_dir or f"{tmp}/cache"})
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rig = _rig(cfg, encoder=encoder, n=batch * (steps + warmup), length=length, dev=dev, out_dir=f"{tmp}/run",
               micro=micro, autocast=precision == "bf16")
    times, losses = _timed_steps(rig, warmup=warmup, steps=steps)
    return _paper_result(rig, times=times, losses=losses, precision=precision, encoder=encoder, length=length,
                         micro=micro)


def _timed_steps(rig: _Rig, *, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds and loss of each of ``steps`` steps after ``warmup`` untimed ones (the GPU synchronised
    around each, its peak memory counted from the first timed step)."""
    import torch

    def sync() -> None:
        if rig.dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(warmup):
        rig.train_step(rig.batch_at(i))
    if rig.dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(warmup, warmup + steps):
        sync()
        t = time.perf_counter()
        losses.append(rig.train_step(rig.batch_at(i))["loss"])
        sync()
        times.append(time.perf_counter() - t)
    return times, losses


def _paper_result(rig: _Rig, *, times: list[float], losses: list[float], precision: str, encoder: str, length: int,
                  micro: int | None) -> dict[str, float | str | None]:
    """The measured step with its peak memory, counted FLOPs and the projection to one GPU."""
    import torch

    dev, batch = rig.dev, rig.batch
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    flops = step_flops(rig.base_enc.model.config, batch=batch, length=length, accumulation=rig.accumulation)
    per_seq = saved_bytes_per_sequence(rig.trainable.model, length=length, device=dev, autocast=precision == "bf16")
    n_params = sum(p.numel() for p in rig.base_enc.model.parameters())
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    s_step = statistics.median(times)
    return {"device": name, "encoder": encoder, "precision": precision, "batch": batch, "length": length,
            "micro": micro or batch, "steps": len(times), "s_per_step": s_step, "step_times_s": times,
            "loss": losses[-1] if losses else None, "base_cache_s": rig.base_s, "peak_memory_gib": peak / 2**30,
            "peak_memory_kind": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "peak RSS",
            "flops_as_run": flops["as_run"], "flops_unsplit": flops["unsplit"],
            "achieved_tflops": flops["as_run"] / s_step / 1e12, "params": n_params,
            "activation_bytes_per_sequence": per_seq,
            # On one GPU the unsplit batch: weights, grads and Adam moments of the trainable copy
            # (16 B/param) + the frozen copy (4 B/param) + the activations of 2B+1 sequences.
            "projected_gpu_memory_gib": (20 * n_params + per_seq * (2 * batch + 1)) / 2**30}


def _print_paper_step(r: dict) -> None:
    print(f"machine: {os.cpu_count()} CPUs; device {r['device']}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"paper preset on sd14-init ({r['params'] / 1e6:.1f}M parameters, random weights), {r['precision']}, "
          f"batch {r['batch']} x {r['length']} tokens, micro-batch {r['micro']}, {r['steps']} timed step(s)")
    print(f"base cache (2 x {r['batch'] * r['steps']} prompts + concept + empty, no grad): {r['base_cache_s']:.1f} s")
    print(f"step: {r['s_per_step']:.1f} s; peak memory {r['peak_memory_gib']:.2f} GiB ({r['peak_memory_kind']}); "
          f"loss {r['loss']:.4f}")
    print(f"FLOPs per step (FlopCounterMode): {r['flops_as_run'] / 1e12:.2f} TFLOP as run "
          f"({r['flops_unsplit'] / 1e12:.2f} unsplit); achieved {r['achieved_tflops'] * 1e3:.1f} GFLOP/s")
    print(f"activations {r['activation_bytes_per_sequence'] / 2**20:.1f} MiB per sequence; "
          f"projected GPU memory for the unsplit batch {r['projected_gpu_memory_gib']:.1f} GiB")
    print("projection to one GPU (unsplit batch, FLOP bound = counted FLOPs / dense spec peak; "
          f"a paper run = {PAPER_STEPS} steps):")
    for device in ("H100", "A100"):
        for precision in ("fp32", "bf16"):
            peak = SPEC_PEAK_TFLOPS[device][precision]
            bound = r["flops_unsplit"] / (peak * 1e12)
            print(f"  {device} {precision:>4} ({peak:g} TFLOP/s): >= {bound:.3f} s/step, "
                  f">= {bound * PAPER_STEPS:.0f} s per run; this CPU step is {r['s_per_step'] / bound:.0f}x that")


if __name__ == "__main__":
    main()
