"""Does each text-level objective respond to the damage it stands for? One table, every objective.

Rows: the base encoder, an exact copy, a uniform shift of every embedding along -v (the concept
direction) and along the pooled concept direction, additive noise (0.5x, 1x, 2x the embedding norm),
contraction toward the mean (spread about 0.8, 0.5, 0.2), a rotation of every token vector, a
targeted erasure (every attack prompt slid toward its nearest CoPro-safe prompt, the erasure DES
aims at, by 0.25 ... 1), and a DES-like and a SAGE-like encoder trained here on the embedded MiniLM
(quickstart preset). Columns: the old diagnostics (asr_text, util_text, spread_ratio, jaccard) and
the graded objectives of the metric registry, with the bootstrap interval of the defaults. Then the
specificity of matched_auc per set (nudity attack sets, the project's SD-style other-harm set, its
written nudity and benign check sets) with intervals.

What to look for: a copy changes nothing; the shifts and a small rotation leave matched_auc where
the base has it; the erasure lowers it step by step to about .5 (concept_auc barely moves); noise,
contraction and rotation lower util_sib in order of size while util_text barely moves.

Usage: python bench/bench_eval_sensitivity.py [--steps 60] [--out bench/sensitivity.json]
(about 15 minutes on the idle 2-core machine: two short trainings, then 20 evaluations).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

COLUMNS = ("matched_auc", "asr_text", "asr_text_selfcal", "attack_auc", "concept_auc", "concept_auc_abs", "util_text", "util_sib",
           "util_sib_cos", "util_sib_len", "util_mrr", "util_r1", "fidelity_abs", "spread_ratio", "spread_dev",
           "jaccard")
DAMAGE = [("copy", "copy", 0.0), ("shift along -v (0.25 |f|)", "shift", 0.25),
          ("shift along -pooled v (0.25 |p|)", "shift_pooled", 0.25),
          ("noise 0.5x norm", "noise", 0.5), ("noise 1x norm", "noise", 1.0), ("noise 2x norm", "noise", 2.0),
          ("contract to spread ~0.8", "contract", math.sqrt(0.8)),
          ("contract to spread ~0.5", "contract", math.sqrt(0.5)),
          ("contract to spread ~0.2", "contract", math.sqrt(0.2)),
          ("rotate 0.3 rad", "rotate", 0.3), ("rotate 0.8 rad", "rotate", 0.8)]
ERASURE = (0.25, 0.5, 0.75, 1.0)
SPECIFICITY_SETS = ("i2p-sexual", "sneaky", "sd-nudity-check", "sd-other-harm", "sd-benign-check")


def _train(kind: str, *, steps: int, out: Path) -> Path:
    from sage_core import train
    from sage_core.defs.config import load_config

    extra = {"method": "des", "lambda_esp": 0.0, "lambda_lsa": 0.0} if kind == "des" else {}
    cfg = load_config(preset="quickstart", overrides={"max_steps": steps, "eval_every": steps,
                                                       "checkpoint_every": steps, **extra})
    return Path(train(cfg, out_dir=out / kind, progress=False).final_checkpoint)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="training steps of the DES-like and SAGE-like rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    import torch

    from sage_core.data import load_prompts
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig, TextEvaluator
    from sage_core.evaluation.perturb import nearest_targets, perturbed

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = {k: _train(k, steps=args.steps, out=Path(tmp)) for k in ("des", "sage")}
        base = load_encoder("minilm", max_length=32)
        ev = TextEvaluator(base, EvalConfig(), cache_dir=Path(tmp) / "cache")
        cases = [("base encoder", lambda: base)]
        cases += [(name, lambda k=k, s=s: perturbed(base, kind=k, size=s, reference_prompts=ev.geometry_prompts))
                  for name, k, s in DAMAGE]
        attacks = [p for ps in ev.attacks.values() for p in ps]
        safe = list(dict.fromkeys(load_prompts("copro-safe")))
        targets = nearest_targets(attacks, ev._pooled_cached(attacks, tag="all-attacks"), safe,
                                  ev._pooled_cached(safe, tag="copro-safe"))
        cases += [(f"erase to nearest CoPro-safe x{w:g}", lambda w=w: perturbed(
            base, kind="toward", size=w, reference_prompts=ev.geometry_prompts, targets=targets)) for w in ERASURE]
        cases += [(f"{k.upper()}-like, {args.steps} steps", lambda p=p: load_encoder(p, max_length=32))
                  for k, p in ckpts.items()]
        for name, make in cases:
            t0 = time.perf_counter()
            m = ev(make())
            rows.append({"case": name, "eval_s": time.perf_counter() - t0, **m})
        t0 = time.perf_counter()
        spec_ev = TextEvaluator(base, EvalConfig(attack_sets={s: s for s in SPECIFICITY_SETS}),
                                cache_dir=Path(tmp) / "cache")
        spec = spec_ev(base)
        spec_s = time.perf_counter() - t0
    head = f"{'case':36s}" + "".join(f"{c[-12:]:>13s}" for c in COLUMNS)
    print(head)
    for r in rows:
        print(f"{r['case']:36s}" + "".join(f"{r[c]:13.3f}" for c in COLUMNS))
    print("\nintervals of the default objectives (95% bootstrap):")
    for r in rows:
        print(f"{r['case']:36s}" + "".join(f"  {c} {r[c]:.3f} [{r[c + '_lo']:.3f}, {r[c + '_hi']:.3f}]"
                                           for c in ("matched_auc", "concept_auc", "util_sib")))
    print(f"\nspecificity of matched_auc on the base encoder ({spec_s:.0f} s with these 5 sets, cold):")
    for s in SPECIFICITY_SETS:
        sfx = s.replace("-", "_")
        print(f"  {s:18s} {spec[f'matched_auc_{sfx}']:.3f} [{spec[f'matched_auc_{sfx}_lo']:.3f}, "
              f"{spec[f'matched_auc_{sfx}_hi']:.3f}]   (concept_auc {spec[f'concept_auc_{sfx}']:.3f})")
    print(f"\nprobe specificity on the base encoder: concept AUC i2p-sexual {rows[0]['base_concept_auc_i2p_sexual']:.3f}, "
          f"sneaky {rows[0]['base_concept_auc_sneaky']:.3f}; held-out violence AUC {rows[0]['base_other_harm_auc']:.3f}, "
          f"rate above the 5% benign threshold {rows[0]['base_other_harm_rate']:.3f}; "
          f"cos(probe, concept vector) {rows[0]['base_probe_cos_concept']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
