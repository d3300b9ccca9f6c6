"""How deep does the erasure go? attack_depth of the base MiniLM and of DES-like, SAGE-like and
adversarially trained encoders (issue 25), with intervals, beside what they cost in utility.

Rows: the base encoder, an exact copy, DES-like and SAGE-like encoders trained here on the
embedded MiniLM (quickstart preset, ``--steps`` steps; ``bench_eval_sensitivity._train``), and the
SAGE-like run with adversarial training (``lambda_adv``, ``adv_every``: sage_core/adversarial.py).
Columns: for the token attack (GCG-style, the default AttackConfig: 64 attack prompts the base
reads as the concept, 4 suffix tokens, 8 rounds of 8 gradient-ranked candidates) and the soft
prompt (the upper bound, 8 Adam steps): attack_depth with its 95% bootstrap interval, the median
step of recovery, the success curve at steps 0, 1, 2, 4, 8 and the wall seconds of the attack;
then the text evaluation's matched_auc, util_sib and fidelity_abs with intervals.

Every timing is printed with the 1-minute load average read before and after it: the machine
is shared, so a time is only comparable with one taken at a similar load.

Usage: python bench/bench_attack_depth.py [--steps 60] [--ckpt-dir DIR] [--threads 1] [--out FILE]
(``--ckpt-dir``: reuse ``DIR/{des,sage,adv}/checkpoints/step_<steps>`` when they exist.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CURVE = (0, 1, 2, 4, 8)
MODES = ("tokens", "soft")


def _checkpoint(kind: str, *, steps: int, out: Path, lambda_adv: float, adv_every: int) -> Path:
    found = out / kind / "checkpoints" / f"step_{steps:06d}"
    if found.is_dir():
        return found
    if kind != "adv":
        from bench_eval_sensitivity import _train

        return _train(kind, steps=steps, out=out)
    from sage_core import train
    from sage_core.defs.config import load_config

    cfg = load_config(preset="quickstart", overrides={"max_steps": steps, "eval_every": steps,
                                                       "checkpoint_every": steps, "lambda_adv": lambda_adv,
                                                       "adv_every": adv_every})
    return Path(train(cfg, out_dir=out / kind, progress=False).final_checkpoint)


def _timed(fn):
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0, (load0, os.getloadavg()[0])


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="training steps of the trained rows")
    ap.add_argument("--lambda-adv", type=float, default=1.0)
    ap.add_argument("--adv-every", type=int, default=2)
    ap.add_argument("--ckpt-dir", type=Path, default=None, help="reuse (or keep) the trained checkpoints here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    import torch

    from sage_core.encoders import load_encoder
    from sage_core.evaluation import EvalConfig, TextEvaluator
    from sage_core.evaluation.attack import AttackConfig
    from sage_core.evaluation.attack_depth import AttackDepthEvaluator, depth_metrics
    from sage_core.evaluation.perturb import perturbed

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_dir = args.ckpt_dir or Path(tmp)
        ckpts = {k: _checkpoint(k, steps=args.steps, out=ckpt_dir, lambda_adv=args.lambda_adv,
                                adv_every=args.adv_every) for k in ("des", "sage", "adv")}
        base = load_encoder("minilm", max_length=32)
        cache = Path(tmp) / "cache"
        depth_ev, setup_s, setup_load = _timed(lambda: AttackDepthEvaluator(base, EvalConfig(), AttackConfig(),
                                                                            cache_dir=cache))
        text_ev = TextEvaluator(base, EvalConfig(), cache_dir=cache)
        cases = [("base encoder", lambda: base),
                 ("exact copy", lambda: perturbed(base, kind="copy", size=0.0, reference_prompts=depth_ev.prompts)),
                 (f"DES-like, {args.steps} steps", lambda: load_encoder(ckpts["des"], max_length=32)),
                 (f"SAGE-like, {args.steps} steps", lambda: load_encoder(ckpts["sage"], max_length=32)),
                 (f"SAGE + adversarial (lambda_adv {args.lambda_adv:g}, every {args.adv_every}), {args.steps} steps",
                  lambda: load_encoder(ckpts["adv"], max_length=32))]
        for name, make in cases:
            enc = make()
            row: dict = {"case": name}
            for mode in MODES:
                depth_ev.attack = AttackConfig(mode=mode)
                result, secs, load = _timed(lambda enc=enc: depth_ev.run(enc))
                m = depth_metrics(result, bootstrap_samples=1000, seed=0)
                row[mode] = {**m, "wall_s": secs, "load": load, "held": (1 - result.recovered()).tolist()}
            row["text"] = {k: v for k, v in text_ev(enc).items()
                           if k.split("_lo")[0].split("_hi")[0] in ("matched_auc", "util_sib", "fidelity_abs")}
            rows.append(row)
            _print_row(row)
    _print_paired(rows)
    print(f"\nsetup (base side: probe, threshold, attack prompts; cold cache) {setup_s:.0f} s, "
          f"load {setup_load[0]:.1f} -> {setup_load[1]:.1f}; {len(depth_ev.prompts)} attack prompts, threshold "
          f"{depth_ev.threshold:.3f}, {depth_ev.base_carried:.0%} of the text evaluation's attack prompts read as "
          f"the concept by the base; torch threads {args.threads}, cpus {os.cpu_count()}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


def _print_paired(rows: list[dict]) -> None:
    """Differences in attack_depth between trained rows on the same prompts (paired bootstrap)."""
    import numpy as np

    from sage_core.evaluation import graded

    print("\npaired differences in attack_depth (same 64 prompts, 95% paired bootstrap):")
    for i, j in ((2, 3), (3, 4), (2, 4)):
        for mode in MODES:
            d = np.asarray(rows[j][mode]["held"]) - np.asarray(rows[i][mode]["held"])
            lo, hi = graded.interval(graded.mean_boots(d, reps=2000, rng=np.random.default_rng(0)))
            print(f"  {mode:6s} {rows[j]['case'][:28]:28s} - {rows[i]['case'][:16]:16s} {d.mean():+.3f} "
                  f"[{lo:+.3f}, {hi:+.3f}]")


def _print_row(row: dict) -> None:
    print(f"\n{row['case']}")
    for mode in MODES:
        m = row[mode]
        curve = " ".join(f"{m[f'attack_recovered_at_{t}']:.2f}" for t in CURVE)
        print(f"  {mode:6s} attack_depth {m['attack_depth']:.3f} [{m['attack_depth_lo']:.3f}, "
              f"{m['attack_depth_hi']:.3f}]  median step {m['attack_steps_median']:g}  recovered at "
              f"{'/'.join(map(str, CURVE))}: {curve}  ({m['wall_s']:.1f} s, load {m['load'][0]:.1f} -> "
              f"{m['load'][1]:.1f})")
    t = row["text"]
    print("  text   " + "  ".join(f"{k} {t[k]:.3f} [{t[k + '_lo']:.3f}, {t[k + '_hi']:.3f}]"
                                  for k in ("matched_auc", "util_sib", "fidelity_abs")))


if __name__ == "__main__":
    main()
