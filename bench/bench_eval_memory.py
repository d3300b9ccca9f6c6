"""Peak memory of a text-level evaluation against the number of attack prompts (``attack_samples=null``).

Attack prompts are embedded in batches and only their pooled vectors are kept; bootstrap
replicates are drawn a chunk at a time and AUCs never build a pair matrix. So peak memory should
stay nearly flat from 1k to 100k prompts. Each size runs in its own process (its peak RSS is its
own), on the embedded MiniLM with a synthetic attack CSV (benign captions with a numbered suffix,
so every prompt is distinct), a light rest of the evaluation (util_groups 1), one ev(aligned) call.

Usage: python bench/bench_eval_memory.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(n: int, work: Path) -> dict:
    import torch

    from sage_core.data import load_prompts
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig, TextEvaluator

    torch.set_num_threads(2)
    coco = load_prompts("coco")
    path = work / f"attack-{n}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt"])
        w.writerows([f"{coco[i % len(coco)]} #{i}"] for i in range(n))
    base = load_encoder("minilm", max_length=32)
    cfg = EvalConfig(attack_sets={"big": str(path)}, attack_samples=None, util_groups=1, retrieval_distractors=100)
    t0 = time.perf_counter()
    m = TextEvaluator(base, cfg, cache_dir=work / f"cache-{n}")(load_encoder("minilm", max_length=32))
    return {"prompts": n, "wall_s": time.perf_counter() - t0, "concept_auc_big": m["concept_auc_big"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.work)))
        return []
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for n in (int(x) for x in args.sizes.split(",")):
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--work", work],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['prompts']:>7d} attack prompts: peak RSS {r['peak_rss_mib']:7.0f} MiB, "
                  f"{r['wall_s']:6.1f} s (init + one call)", flush=True)
    first = rows[0]["peak_rss_mib"]
    for r in rows[1:]:
        print(f"peak RSS {r['prompts']} / {rows[0]['prompts']} prompts: {r['peak_rss_mib'] / first:.2f}x")
    return rows


if __name__ == "__main__":
    main()
