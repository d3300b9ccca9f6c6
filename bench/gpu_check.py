"""`make gpu-check`: what one GPU must show, measured in one script in under 8 minutes.

Parts, each in its own process with its own time limit; a part that fails or runs out of time is
reported with the reason and the others go on:

  train_step  the paper preset on sd14-init (SD v1.4's text-encoder shape, random weights), batch 128
              x 77 tokens, unsplit, fp32 and bf16: s/step, ratio to the device's FLOP bound, peak memory
  image_gen   an SD-v1.x UNet and VAE built from config (random weights), 512x512, 50 DDIM steps,
              CFG 7.5, bf16, batch chosen by memory: images/s and ratio to the FLOP bound
  nudenet     NudeNet detection throughput (images/s) on those images
  sweep       the quickstart sweep, 4 trials at once on one GPU (resources.gpus 0.25, fifo): sweep
              wall time vs the sum of the trials' own times
  attack      one erasure-depth evaluation on sd14-init (the default attack: 64 prompts, 8 steps,
              8 candidates): seconds to the full budget, depth of the base (0) and of an exact copy

Targets: bf16 step >= 2x fp32; image generation >= 50% of the FLOP bound; 4 trials share one GPU
with wall < 0.5x the sum of trial times; the base's attack depth is 0 and an exact copy's equals it.
The FLOP bound is the dense spec peak of a known device (bench_step.SPEC_PEAK_TFLOPS), else the
measured dense matmul rate. FLOPs are counted with torch.utils.flop_counter, not assumed.

--tiny (what runs without a CUDA device): the same parts at tiny size on CPU, about a minute on an
idle 2-core machine (tests/test_gpu_check.py runs it). Part limits are multiplied by the machine's
measured slowdown (a fixed workload timed against an idle reference), so a busy machine gets longer
limits, and a part that still times out says that load is the likely cause. Prints a table and
writes every number to a JSON file.

The parts themselves live in bench/gpu_parts.py; this script runs, times and reports them.

Usage: python bench/gpu_check.py [--tiny] [--out runs/gpu-check/gpu_check.json] [--parts train_step ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpu_parts import PART_FUNCS, PARTS, _cuda, _device_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Seconds each part may take on an idle machine (GPU, tiny); the whole check stays under 8 minutes on
#: one GPU. The tiny limits are hang guards, ~10x the idle 2-core times (6.5 s train_step, 24.5 s
#: sweep, 15 s attack), since nothing is judged in tiny mode. Both scale with the machine's measured
#: load factor.
LIMITS = {"train_step": (150, 90), "image_gen": (120, 90), "nudenet": (45, 60), "sweep": (165, 240),
          "attack": (90, 150)}
TOTAL_LIMIT_S = 480
#: Seconds the calibration workload takes on an idle core of the 2-core development machine.
CALIBRATION_REFERENCE_S = 0.09

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


# --------------------------------------------------------------------------------------------
def _run_part_child(name: str, *, tiny: bool, work: Path, result: Path) -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    t = time.perf_counter()
    out = PART_FUNCS[name](tiny=tiny, work=work)
    out["part_s"] = time.perf_counter() - t
    result.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")


def _why(log: str) -> str:
    """The last line of a failed child's output that names the error."""
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception", "Interrupt")) or "Error:" in ln]
    return (errors or lines or ["no output"])[-1][:400]


def calibration_s() -> float:
    """Seconds a fixed single-threaded workload (matmuls and Python arithmetic) takes right now."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            a = torch.full((192, 192), 1 / 192.0)
            for _ in range(300):
                a = a @ a
                a = a / a.sum() * 192
            sum(i * i for i in range(300_000))
            best = min(best, time.perf_counter() - t)
        return best
    finally:
        torch.set_num_threads(threads)


def load_factor() -> float:
    """How many times slower than an idle reference core this machine runs now (at least 1): a
    loaded machine gets proportionally longer limits instead of failing parts that would finish."""
    return max(1.0, calibration_s() / CALIBRATION_REFERENCE_S)


def _timeout_text(limit: int, factor: float) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"timed out after {limit} s (the idle limit x{factor:.1f}, this machine's measured slowdown; "
            f"load average {load:.1f} on {os.cpu_count()} cores): a busy machine is the likely cause; "
            f"rerun when it is idle")


def run_parts(parts: list[str], *, tiny: bool, work: Path, factor: float = 1.0) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    total = (sum(LIMITS[p][1] for p in parts) if tiny else TOTAL_LIMIT_S) * factor
    deadline = time.monotonic() + total
    for name in parts:
        limit = min(int(LIMITS[name][1 if tiny else 0] * factor), max(1, int(deadline - time.monotonic())))
        result = work / f"{name}.json"
        log = work / f"{name}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--work", str(work),
               "--result", str(result)] + (["--tiny"] if tiny else [])
        print(f"[{name}] running (limit {limit} s) ...", flush=True)
        t = time.perf_counter()
        try:
            with log.open("w", encoding="utf-8") as fh:
                proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=limit, cwd=ROOT)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
        wall = time.perf_counter() - t
        if rc == 0 and result.is_file():
            results[name] = {"status": "ok", "process_s": wall, **json.loads(result.read_text(encoding="utf-8"))}
        else:
            why = (_timeout_text(limit, factor) if rc is None
                   else _why(log.read_text(encoding="utf-8", errors="replace")))
            results[name] = {"status": "failed", "process_s": wall, "why": why, "log": str(log)}
            print(f"[{name}] failed: {why} (log: {log})", flush=True)
    return results


def print_table(results: dict[str, dict[str, Any]], *, tiny: bool) -> None:
    print(f"\n{'part':<11} {'status':<7} {'s':>6}  {'target':<7} result")
    for name, r in results.items():
        met = "" if "met" not in r else "n/a" if tiny else ("met" if r["met"] else "MISSED")
        text = r.get("summary", "") if r["status"] == "ok" else r.get("why", "")
        print(f"{name:<11} {r['status']:<7} {r['process_s']:>6.1f}  {met:<7} {text}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the same parts at tiny size on CPU (< 2 minutes)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check" / "gpu_check.json")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        _run_part_child(args.part, tiny=args.tiny, work=args.work, result=args.result)
        return 0
    sys.path.insert(0, str(HERE))
    tiny = args.tiny
    if not tiny and not _cuda():
        print("no CUDA device visible: running the tiny CPU mode (--tiny)", flush=True)
        tiny = True
    work = args.work or Path(tempfile.mkdtemp(prefix="sage-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    header = {"device": _device_name(), "tiny": tiny, "torch": torch.__version__, "python": platform.python_version(),
              "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": str(work)}
    print(f"gpu-check on {header['device']} ({'tiny CPU mode' if tiny else 'full size'}); scratch {work}", flush=True)
    header["load_factor"] = factor = load_factor()
    if factor > 1.5:
        print(f"this machine runs {factor:.1f}x slower than an idle one now: part limits scaled to match", flush=True)
    t = time.perf_counter()
    results = run_parts(args.parts, tiny=tiny, work=work, factor=factor)
    header["wall_s"] = time.perf_counter() - t
    print_table(results, tiny=tiny)
    if tiny:
        print("(tiny CPU mode: the targets are for one GPU at full size, so none is judged here)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**header, "parts": results}, indent=2, default=str), encoding="utf-8")
    failed = [n for n, r in results.items() if r["status"] != "ok"]
    print(f"\ntotal {header['wall_s']:.1f} s; {len(results) - len(failed)}/{len(results)} parts ran"
          + (f" ({', '.join(failed)} failed)" if failed else "") + f"; JSON: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
