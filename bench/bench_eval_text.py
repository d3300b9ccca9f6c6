"""Text-level evaluation wall time on the embedded MiniLM encoder (32 tokens), default EvalConfig.

Measured side by side in one run:
- cold: TextEvaluator construction with an empty cache (base embeddings, threshold calibration on
  the benign sample, base scores) + one ``ev(aligned)`` call;
- warm: construction with the cache filled by the cold run + one ``ev(aligned)`` call;
- per call: ``ev(aligned)`` alone (what every rung of every trial pays), median of --repeat;
- reference: one full-length forward of 512 COCO prompts, so a run on a loaded machine can be
  read in encoder forwards (cold / reference) as well as in seconds.

The concept probe of the embedded encoder ships fitted (``sage_core/data/probes``); ``--fit-probe``
ignores it, as for any other encoder, to show what fitting costs.

Usage: python bench/bench_eval_text.py [--repeat 3] [--threads 2] [--fit-probe]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--fit-probe", action="store_true", help="ignore the shipped probe: fit it (cold)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="EvalConfig KEY=VALUE")
    args = ap.parse_args(argv)

    import torch

    import sage_core.evaluation.probe as probe_mod
    from sage_core.data import load_prompts
    from sage_core.defs.config import parse_overrides
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import TextEvaluator, build_eval_config

    torch.set_num_threads(args.threads)
    cfg = build_eval_config(parse_overrides(args.overrides))
    base = load_encoder(args.encoder, max_length=args.max_length)
    aligned = load_encoder(args.encoder, max_length=args.max_length)
    ref_prompts = load_prompts("coco")[:512]
    base.embed(ref_prompts[:64])  # warm-up
    s = time.perf_counter()
    base.embed(ref_prompts, batch_size=cfg.batch_size)
    ref_s = time.perf_counter() - s
    with tempfile.TemporaryDirectory() as cache:
        if args.fit_probe:
            probe_mod.PACKAGED_PROBES = probe_mod.Path(cache) / "no-shipped-probe"
        t0 = time.perf_counter()
        ev = TextEvaluator(base, cfg, cache_dir=cache)
        t1 = time.perf_counter()
        ev(aligned)
        t2 = time.perf_counter()
        ev2 = TextEvaluator(base, cfg, cache_dir=cache)
        t3 = time.perf_counter()
        calls = []
        for _ in range(args.repeat):
            s = time.perf_counter()
            ev2(aligned)
            calls.append(time.perf_counter() - s)
    d = ev.describe()
    res = {"cold_init_s": t1 - t0, "cold_total_s": t2 - t0, "warm_init_s": t3 - t2,
           "warm_total_s": (t3 - t2) + calls[0], "call_s": statistics.median(calls), "reference_s": ref_s}
    print(f"encoder {args.encoder} @ {args.max_length} tokens, torch threads {args.threads}; "
          f"aligned prompts per call {d['aligned_prompts_per_call']} (attack {d['attack_prompts']}, "
          f"util {d['util_prompts']}, geometry {d['geometry_prompts']}), calibration {d['benign_prompts']}, "
          f"retrieval candidates {d['retrieval_candidates']}; probe: {d['probe']}")
    print(f"reference: 512 full-length forwards in {ref_s:.2f} s ({512 / ref_s:.0f} prompts/s)")
    print(f"cold  (empty cache): init {res['cold_init_s']:.2f} s + call -> total {res['cold_total_s']:.2f} s")
    print(f"warm  (filled cache): init {res['warm_init_s']:.2f} s + call -> total {res['warm_total_s']:.2f} s")
    print(f"ev(aligned) alone: median {res['call_s']:.2f} s over {args.repeat} "
          f"({d['aligned_prompts_per_call'] / res['call_s']:.0f} prompts/s)")
    print(f"cold total = {res['cold_total_s'] / ref_s:.1f} x the reference forward of 512 prompts")
    print(f"ratio cold/warm total: {res['cold_total_s'] / res['warm_total_s']:.2f}x; "
          f"warm init / call: {res['warm_init_s'] / res['call_s']:.2f}")
    return res


if __name__ == "__main__":
    main()
