"""How fast does the erasure come back? The robustness stage on a finished sweep's final checkpoints.

For each finished trial of a sweep (default: runs/robustness-cpu, the shipped robustness-cpu
spec), reload its final checkpoint and run the benign LoRA fine-tune (sage_core.robustness) with
each benign objective (refit, style) for a few step counts; print, per trial, the safety objectives
before and after with their intervals, the paired delta and the share of the erasure undone
(``recovered`` = delta / (base - before)), and the proximal disruption at the checkpoint.

What to look for: an erasure that a few dozen benign steps undo (recovered near 1) is superficial;
compare the DES-like corner (lambda_esp = lambda_lsa = 0) with the SAGE-like one (2, 0.1).

Usage: python bench/bench_robustness.py [--sweep runs/robustness-cpu] [--steps 10 30 100]
[--trials ID ...] [--out bench/robustness.json] (a few minutes per trial on the 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SHOWN = ("concept_auc", "concept_auc_abs")


def _fmt(row: dict, name: str) -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    v = row.get(name)
    if v is None or v != v:
        return "-"
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="runs/robustness-cpu")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--objectives", nargs="+", default=["refit", "style"])
    ap.add_argument("--trials", nargs="+", default=None, help="trial ids (default: every finished trial)")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args()


def _finals_and_config(args: argparse.Namespace) -> tuple[list[dict], Any]:
    """The sweep's final text rows (those of ``--trials`` when given) and its base TrainConfig."""
    from analysis.store import ResultStore
    from sage_core.defs.config import load_config
    from sweeps.image_stage import final_text_rows
    from sweeps.runner import load_sweep_spec
    from sweeps.spec import base_train_config

    spec, _ = load_sweep_spec(args.sweep)
    rows = ResultStore(str(Path(args.sweep) / "results")).read().to_pylist()
    finals = sorted(final_text_rows(rows).values(), key=lambda r: r["trial_id"])
    finals = [r for r in finals if args.trials is None or r["trial_id"] in args.trials]
    return finals, load_config(overrides=base_train_config(spec, storage_root=Path(args.sweep)))


def _robust_runs(aligned: Any, before: dict, scores: Any, *, args: argparse.Namespace, ev: Any, paired: Any,
                 prox: Any) -> list[dict]:
    """The benign fine-tune of one checkpoint for each objective and step count, each printed as it ends."""
    from sage_core.robustness import RobustConfig, robustness_metrics

    runs = []
    for objective in args.objectives:
        for steps in args.steps:
            t0 = time.perf_counter()
            out = robustness_metrics(aligned, evaluator=ev, cfg=RobustConfig(steps=steps, objective=objective),
                                     before=before, paired=paired, aligned_scores=scores,
                                     exclude=set(prox.bank.prompts))
            secs = time.perf_counter() - t0
            print(f"  {objective:5s} x{steps:<4d}: " + ", ".join(
                f"robust_{m} {_fmt(out, f'robust_{m}')} (delta {_fmt(out, f'robust_{m}_delta')}, "
                f"recovered {_fmt(out, f'robust_{m}_recovered')})" for m in SHOWN)
                + f", robust_util_sib {_fmt(out, 'robust_util_sib')}, loss {out['robust_ft_loss_start']:.3f}"
                f" -> {out['robust_ft_loss']:.3f} ({secs:.0f} s)", flush=True)
            runs.append({"objective": objective, "steps": steps, "seconds": secs, **out})
    return runs


def _trial(row: dict, *, args: argparse.Namespace, cfg: Any, ev: Any, paired: Any, prox: Any) -> dict | None:
    """One finished trial: its checkpoint before (printed), its proximal disruption and its robust runs;
    None (printed) when its checkpoint is not on disk."""
    from sage_core.encoders import load_encoder
    from sage_core.evaluation.paired import probe_scores

    ckpt = row.get("checkpoint")
    if not ckpt or not Path(ckpt).is_dir():
        print(f"trial {row['trial_id']}: no checkpoint on disk ({ckpt}); skipped")
        return None
    aligned = load_encoder(ckpt, max_length=cfg.max_length)
    before = ev(aligned)
    scores = probe_scores(ev, aligned)
    disruption = prox(aligned, concept_auc=before["concept_auc"], concept_auc_boots=paired.auc(scores)[1])
    head = (f"trial {row['trial_id']} lambda_esp={row['lambda_esp']:g} lambda_lsa={row['lambda_lsa']:g} "
            f"(step {row['step']}): " + ", ".join(f"{m} {_fmt(before, m)}" for m in (*SHOWN, "util_sib"))
            + ", " + ", ".join(f"{m} {_fmt(disruption, m)}" for m in ("prox_drift", "prox_knn", "sadi_text")))
    print(head, flush=True)
    return {"trial_id": row["trial_id"], "lambda_esp": row["lambda_esp"], "lambda_lsa": row["lambda_lsa"],
            "before": {k: before[k] for k in before if k.startswith(SHOWN) or k.startswith("util_sib")},
            "proximal": disruption,
            "robust": _robust_runs(aligned, before, scores, args=args, ev=ev, paired=paired, prox=prox)}


def main() -> None:
    args = _args()
    finals, cfg = _finals_and_config(args)

    from sage_core.encoders import load_encoder
    from sage_core.evaluation import TextEvaluator, build_eval_config
    from sage_core.evaluation.paired import PairedAUC
    from sage_core.evaluation.proximal import ProximalEvaluator

    base = load_encoder(cfg.encoder, max_length=cfg.max_length)
    ev = TextEvaluator(base, build_eval_config(cfg.eval_config_values()), cache_dir=cfg.resolved_cache_dir())
    prox = ProximalEvaluator(base, cache_dir=cfg.resolved_cache_dir())
    paired = PairedAUC(ev)
    results = [entry for row in finals
               if (entry := _trial(row, args=args, cfg=cfg, ev=ev, paired=paired, prox=prox)) is not None]
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
