"""Step-time benchmark of the SAGE trainer, measured side by side in one run.

Prints, for the embedded MiniLM encoder at length 32 on this machine:
  * ours / floor: our full SAGE step (cached base data, codebook targets, all six loss terms,
    DeepSpeed engine step) over the bare forward+backward+step of the trainable encoder on the
    same token batches (target <= 1.15);
  * reference / ours: a reference-style loop (as the official scripts: tokenise every batch and
    re-embed the safe prompts with the frozen encoder every step) over ours;
  * per-step time and peak resident memory at batch 16 and 128 (each size in its own process).

Usage: python bench/bench_step.py [--batch 16 128] [--steps 6] [--length 32]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _measure(batch: int, steps: int, length: int) -> dict[str, float]:
    import torch

    from sage_core.codebook import build_base_data
    from sage_core.config import load_config
    from sage_core.data import load_prompts
    from sage_core.encoders import TextEncoder, load_encoder
    from sage_core.losses import LossWeights, unsafe_targets
    from sage_core.trainer import Trainer

    cfg = load_config(preset="quickstart", overrides={"batch_size": batch, "max_length": length,
                                                      "local_k": min(10, batch - 1)})
    n = max(batch * (steps + 2), 256)
    safe, unsafe = load_prompts("copro-safe", limit=n), load_prompts("copro-unsafe", limit=n)
    base_enc = load_encoder("minilm", max_length=length)
    base = build_base_data(base_enc, safe_prompts=safe, unsafe_prompts=unsafe, concept=cfg.concept,
                           cache_dir=cfg.resolved_cache_dir())
    import copy

    trainable = TextEncoder(model=copy.deepcopy(base_enc.model), tokenizer=base_enc.tokenizer, max_length=length,
                            is_clip=False, source="minilm")
    trainable.model.train()
    trainer = Trainer(cfg, out_dir="/tmp/bench-step", progress=False)
    engine, _ = trainer._init_engine(trainable, micro=batch, accumulation=1)
    scale = cfg.concept_guidance_ratio * base.mean_safe_norm()
    w = LossWeights(lambda_safe=cfg.lambda_safe, lambda_esp=cfg.lambda_esp, lambda_lsa=cfg.lambda_lsa,
                    local_k=cfg.local_k, alpha=cfg.alpha, scale=scale)
    v, u = base.direction, base.empty
    safe_tok, unsafe_tok, concept_tok = trainable.tokenize(safe), trainable.tokenize(unsafe), trainable.tokenize([cfg.concept])
    m_all = base.safe[base.farthest]

    def batch_at(i: int) -> dict:
        idx = torch.arange(i * batch, (i + 1) * batch)
        return {"safe": {k: t[idx] for k, t in safe_tok.items()}, "unsafe": {k: t[idx] for k, t in unsafe_tok.items()},
                "concept": concept_tok, "b": base.safe[idx], "targets": unsafe_targets(m_all[idx], v, scale)}

    def ours(i: int) -> None:
        trainer._train_step(engine, batch_at(i), v=v, u=u, w=w, accumulation=1)
        engine.step()

    def floor(i: int) -> None:
        bt = batch_at(i)
        loss = sum(engine(t["input_ids"], t["attention_mask"]).float().mean()
                   for t in (bt["safe"], bt["unsafe"], bt["concept"]))
        engine.backward(loss)
        engine.step()

    frozen = base_enc.module().eval()

    def reference(i: int) -> None:
        # What the official loop does each step: tokenise text and re-embed the safe batch with E0.
        sl = slice(i * batch, (i + 1) * batch)
        tok_s, tok_u = trainable.tokenize(safe[sl]), trainable.tokenize(unsafe[sl])
        tok_c = trainable.tokenize([cfg.concept])
        with torch.no_grad():
            b = frozen(tok_s["input_ids"], tok_s["attention_mask"])
        idx = torch.arange(sl.start, sl.stop)
        bt = {"safe": tok_s, "unsafe": tok_u, "concept": tok_c, "b": b,
              "targets": unsafe_targets(m_all[idx], v, scale)}
        trainer._train_step(engine, bt, v=v, u=u, w=w, accumulation=1)
        engine.step()

    times: dict[str, list[float]] = {"ours": [], "floor": [], "reference": []}
    ours(0), floor(0), reference(0)  # warm-up
    for i in range(1, steps + 1):  # interleaved, so load changes hit all three alike
        for name, fn in (("ours", ours), ("floor", floor), ("reference", reference)):
            t = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "length": length, **{f"{k}_s": v for k, v in med.items()},
            "ours_over_floor": med["ours"] / med["floor"], "reference_over_ours": med["reference"] / med["ours"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
