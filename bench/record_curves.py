"""Record real learning curves of a SAGE grid on the embedded MiniLM, for tabular search benchmarks.

Every configuration of the grid below trains with the real DeepSpeed trainer (``sage_core.Trainer``,
quickstart preset: MiniLM at 32 tokens, batch 16) and is evaluated by the real text evaluator
(``sage_core.evaluation.TextEvaluator``, the quickstart rung settings) at the steps of ``--eval-at``
(the last is the run length). Every numeric metric of every evaluation (objectives, diagnostics,
their ``_lo``/``_hi`` intervals, the training losses) becomes one row of a Parquet table keyed by
(config_id, step); the file's metadata says how it was made (command, commit, machine, time,
threads, load).

All configurations share one cache folder, so the base embeddings, codebook and the evaluator's base
data are built once (by the first configuration) and read by the others. The table is rewritten
after each configuration, and a rerun with the same arguments skips the configurations already in it,
so an interrupted recording resumes where it stopped.

Run (31 min on the 2-core CPU with --jobs 2, one torch thread per process; bench/data/README.md):
    OMP_NUM_THREADS=1 .venv/bin/python bench/record_curves.py --jobs 2 [--seed 1 --out PATH]
``--grid heldout`` records the held-out table that no search method is tuned on (issue 24): local_k x
alpha x lr at batch 32 with lambda_lsa 0.5 (so the LSA knobs act), 12 configurations run for 48 steps
(the main table's training examples in half the steps; about the same time per configuration):
    OMP_NUM_THREADS=1 .venv/bin/python bench/record_curves.py --grid heldout --eval-at 6,12,24,48 --jobs 2 \
        --out bench/data/sage_minilm_curves_heldout.parquet [--seed 1 --out ..._heldout_seed1.parquet]
Time one configuration first (writes nothing under bench/data):
    OMP_NUM_THREADS=1 .venv/bin/python bench/record_curves.py --only 1 --out /tmp/curves-trial.parquet
``--jobs N`` runs N processes side by side, each recording every N-th configuration (``--shard K/N``
into ``<out>.partK``, each resumable), then merges them into ``--out`` (``--merge PART...`` does
only that step).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from sage_core.trainer import Trainer, TrainerCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "data" / "sage_minilm_curves.parquet"
# 4 x 3 x 2 = 24 configurations around the quickstart/paper defaults. Every dimension acts in every
# configuration (local_k would not: it does nothing when lambda_lsa = 0, so a local_k grid repeats runs).
GRID: dict[str, tuple] = {
    "lambda_esp": (0.0, 0.5, 2.0, 4.0),
    "lambda_lsa": (0.0, 0.1, 0.5),
    "lr": (5e-5, 1e-4),
}
# 96 steps (between the quickstart spec's 60 and the preset's 200), a doubling ladder of evaluations:
# the rungs a real sweep would use (the spec's rungs sit at 1/3 and 2/3; these at 1/8, 1/4, 1/2).
DEFAULT_EVAL_AT = "6,12,24,48,96"
# The quickstart preset's own rung evaluation (calibration 500 prompts, 96 prompts per attack set,
# 10 minimal-pair groups per TIFA category, bootstrap intervals) and the quickstart spec's 128
# geometry prompts: what a real sweep on this encoder reports at each rung.
TEXT_EVAL: dict = {}
DIAG_SAMPLES = 128


# --grid NAME -> (the grid, settings fixed for every configuration of it)
GRIDS: dict[str, tuple[dict[str, tuple], dict]] = {
    "main": (GRID, {}),
    "heldout": ({"local_k": (5, 10, 20), "alpha": (0.0, 2.0), "lr": (5e-5, 1e-4)},
                {"batch_size": 32, "lambda_lsa": 0.5}),
}


def grid_configs(name: str = "main") -> list[dict]:
    grid = GRIDS[name][0]
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "sage_core"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+dirty-sage_core" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


class Recorder(TrainerCallback):
    """Trainer callback: at each step of ``eval_at``, the shared text evaluator on the live encoder."""

    def __init__(self, *, evaluator, eval_at: set[int], rows: list[dict], base: dict):
        self.evaluator, self.eval_at, self.rows, self.base = evaluator, eval_at, rows, base
        self.trainer = None  # set once the Trainer exists (its live encoder is what we evaluate)
        self.t0 = time.perf_counter()
        self.last: float | None = None
        self.train_s = 0.0  # optimiser steps 2..step (step 1 also holds the setup; evaluations excluded)
        self.losses: dict[str, list[float]] = {}

    def on_step(self, info) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.train_s += now - self.last
        for k, x in info.losses.items():
            self.losses.setdefault(k, []).append(float(x))
        if info.step in self.eval_at:
            metrics = self.evaluator(self.trainer.encoder)
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            numeric.update({k: sum(xs) / len(xs) for k, xs in self.losses.items()})  # mean since the last row
            self.losses.clear()
            done = time.perf_counter()
            self.rows.append({**self.base, "step": int(info.step), "total_steps": int(info.total_steps),
                              "wall_s": done - self.t0, "train_s": self.train_s, "eval_s": done - now, **numeric})
            print(f"  step {info.step}/{info.total_steps}: matched_auc {numeric.get('matched_auc', float('nan')):.4f}, "
                  f"concept_auc {numeric['concept_auc']:.4f}, "
                  f"util_sib {numeric['util_sib']:.4f} ({done - self.t0:.0f} s; steps {self.train_s:.0f} s, "
                  f"this evaluation {done - now:.0f} s)", flush=True)
            now = done
        self.last = now


def trial_config(params: dict, *, steps: int, seed: int, cache_dir: Path, fixed: dict | None = None):
    """The quickstart preset with ``fixed`` and ``params``; the trainer's own evaluation only at the end
    (geometry)."""
    from sage_core.defs.config import load_config

    cfg = load_config(preset="quickstart", overrides={**(fixed or {}), **params,
        "max_steps": steps, "eval_every": steps, "checkpoint_every": steps, "keep_checkpoints": 1,
        "diag_samples": DIAG_SAMPLES, "seed": seed, "cache_dir": str(cache_dir)})
    return cfg.replace(text_eval={**cfg.text_eval, **TEXT_EVAL})


def shared_evaluator(cfg):
    """One TextEvaluator for every configuration: base embeddings, probe and samples built once."""
    from sage_core.encoders import load_encoder
    from sage_core.evaluation import TextEvaluator, build_eval_config

    base = load_encoder(cfg.encoder, max_length=cfg.max_length)
    return TextEvaluator(base, build_eval_config(cfg.eval_config_values()), cache_dir=cfg.resolved_cache_dir())


def record_one(config_id: int, params: dict, *, evaluator, steps: int, eval_at: set[int], cache_dir: Path,
               seed: int, fixed: dict | None = None) -> list[dict]:
    """Train one configuration to ``steps``, evaluating at ``eval_at``; one row per evaluation."""
    cfg = trial_config(params, steps=steps, seed=seed, cache_dir=cache_dir, fixed=fixed)
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix=f"sage-record-{config_id}-"))
    recorder = Recorder(evaluator=evaluator, eval_at=eval_at, rows=rows, base={"config_id": config_id, **params})
    try:
        trainer = Trainer(cfg, out_dir=work, callbacks=[recorder], progress=False, evaluate=False)
        recorder.trainer = trainer
        trainer.fit()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def write_table(rows: list[dict], out: Path, meta: dict) -> None:
    """Atomic: a temporary file renamed into place, so a killed run leaves the last complete table."""
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    rows = sorted(rows, key=lambda r: (r["config_id"], r["step"]))
    table = pa.table({n: [r.get(n) for r in rows] for n in names})
    table = table.replace_schema_metadata({b"sage_record": json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)


def read_rows(path: Path) -> tuple[list[dict], dict]:
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"sage_record", b"{}"))
    return table.to_pylist(), meta


def merge_tables(parts: list[Path], out: Path) -> int:
    """One table from shard tables recorded with the same settings (each config from one shard)."""
    rows: list[dict] = []
    metas = []
    for part in parts:
        part_rows, meta = read_rows(part)
        rows.extend(part_rows)
        metas.append(meta)
    settings = [json.dumps({k: v for k, v in m.get("settings", {}).items() if k != "shard"}, sort_keys=True)
                for m in metas]
    if len(set(settings)) != 1:
        print(f"error: {', '.join(map(str, parts))} were recorded with different settings", file=sys.stderr)
        return 2
    keys = [(r["config_id"], r["step"]) for r in rows]
    if len(keys) != len(set(keys)):
        print("error: the parts share configurations; merge disjoint shards", file=sys.stderr)
        return 2
    first = min(metas, key=lambda m: m.get("started_utc", ""))
    last = max(metas, key=lambda m: m.get("finished_utc", ""))
    meta = {**metas[0], "settings": json.loads(settings[0]),
            "started_utc": first.get("started_utc"), "load_at_start": first.get("load_at_start"),
            "finished_utc": last.get("finished_utc"), "load_at_end": last.get("load_at_end"),
            "command": " && ".join(m.get("command", "?") for m in metas),
            "configs_recorded": len({r["config_id"] for r in rows}),
            "shards": [{k: m.get(k) for k in ("command", "commit", "started_utc", "finished_utc", "load_at_start",
                                              "load_at_end", "configs_recorded")} for m in metas]}
    write_table(rows, out, meta)
    print(f"merged {len(parts)} parts: {len(rows)} rows ({meta['configs_recorded']} configurations) into {out}")
    return 0


def shard_commands(args: argparse.Namespace, *, jobs: int) -> list[tuple[list[str], Path]]:
    """The command line and part file of each of ``jobs`` shard processes, from the parsed arguments."""
    grid = getattr(args, "grid", "main")  # the main grid's commands stay as its recordings ran them
    common = ["--eval-at", ",".join(map(str, args.eval_at)), "--seed", str(args.seed),
              *(["--grid", grid] if grid != "main" else []),
              *(["--first", ",".join(map(str, args.first))] if getattr(args, "first", ()) else []),
              "--cache-dir", str(args.cache_dir)] + (["--only", str(args.only)] if args.only is not None else [])
    out = []
    for k in range(jobs):
        part = args.out.with_name(f"{args.out.name}.part{k}")
        out.append(([sys.executable, __file__, *common, "--shard", f"{k}/{jobs}", "--out", str(part)], part))
    return out


def run_jobs(args: argparse.Namespace, *, n_configs: int) -> int:
    """``--jobs N``: N shard processes of this script side by side (at most one per configuration),
    then :func:`merge_tables`. A rerun resumes each shard from its part file."""
    if args.out.exists():
        print(f"error: --out={args.out} exists; --jobs writes a new table (move it away, or rerun without "
              "--jobs to resume it in one process)", file=sys.stderr)
        return 2
    shards = shard_commands(args, jobs=min(args.jobs, n_configs))
    procs: list[subprocess.Popen] = []
    try:
        procs = [subprocess.Popen(cmd) for cmd, _ in shards]
        codes = [proc.wait() for proc in procs]
    finally:  # interrupted: take the shards down too (their part files keep what they finished)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if any(codes):
        print(f"error: shard exit codes {codes}; rerun the same command to resume", file=sys.stderr)
        return 1
    parts = [part for _, part in shards]
    code = merge_tables(parts, args.out)
    if code == 0:
        for part in parts:
            part.unlink()
    return code


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, e.g. 0/2") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= K < N")
    return k, n


def _steps_list(text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated step numbers, e.g. 4,8,16,32") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected step numbers >= 1")
    return values


def _ids_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated configuration ids, e.g. 0,1,14") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--eval-at", type=_steps_list, default=_steps_list(DEFAULT_EVAL_AT),
                   help=f"steps to evaluate at; the last is the run length (default {DEFAULT_EVAL_AT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", type=int, default=None, help="record only the first N configurations (timing)")
    p.add_argument("--first", type=_ids_list, default=(),
                   help="configuration ids (0-based) to record before the others, e.g. the arms a recording "
                        "cut short must hold; the table is the same")
    p.add_argument("--shard", type=_shard, default=(0, 1),
                   help="K/N: record only the configurations whose id is K modulo N (one process per core)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="PART",
                   help="write one table to --out from shard tables, then stop")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes to run side by side (one per core; each takes every N-th configuration), then "
                        "one table")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sage-sweeps")
    p.add_argument("--grid", choices=sorted(GRIDS), default="main",
                   help="main: lambda_esp x lambda_lsa x lr (the search bench's tables); heldout: local_k x alpha "
                        "x lr at batch 32, lambda_lsa 0.5 (no search method is tuned on it)")
    return p


def _settings(args: argparse.Namespace) -> dict:
    """What a recording holds fixed; resuming --out requires the same."""
    grid, fixed = GRIDS[args.grid]
    settings = {"eval_at": args.eval_at, "seed": args.seed, "grid": grid, "preset": "quickstart",
                "diag_samples": DIAG_SAMPLES, "text_eval": TEXT_EVAL}
    if fixed:  # only then: the main grid's settings stay as its recordings hold them
        settings["fixed"] = fixed
    if args.shard != (0, 1):  # a merged table drops it, so it compares equal to an unsharded recording
        settings["shard"] = list(args.shard)
    return settings


def record(args: argparse.Namespace) -> int:
    """Record this process's configurations (its shard's) into --out, resuming what --out holds;
    the table is rewritten after each configuration."""
    steps = args.eval_at[-1]
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    configs = grid_configs(args.grid)[: args.only]
    fixed = GRIDS[args.grid][1]
    settings = _settings(args)
    rows: list[dict] = []
    if args.out.is_file():
        rows, old = read_rows(args.out)
        if old.get("settings") != json.loads(json.dumps(settings)):
            print(f"error: --out={args.out} holds a recording with other settings ({old.get('settings')}); "
                  "pick another --out or move it away", file=sys.stderr)
            return 2
    done = {r["config_id"] for r in rows}
    meta = {"command": f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " + shlex.join(["python", *sys.argv]),
            "commit": _commit(), "machine": _machine(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_at_start": _load(), "settings": settings}
    t_all = time.perf_counter()
    evaluator = shared_evaluator(trial_config(configs[0], steps=steps, seed=args.seed, cache_dir=args.cache_dir,
                                              fixed=fixed))
    meta["evaluator"] = evaluator.describe()
    print(f"text evaluator ready in {time.perf_counter() - t_all:.0f} s", flush=True)
    order = [*(c for c in args.first if c < len(configs)), *(c for c in range(len(configs)) if c not in args.first)]
    for cid in order:
        params = configs[cid]
        if cid in done or cid % args.shard[1] != args.shard[0]:
            continue
        print(f"config {cid + 1}/{len(configs)}: {params}", flush=True)
        rows.extend(record_one(cid, params, evaluator=evaluator, steps=steps, eval_at=set(args.eval_at),
                               cache_dir=args.cache_dir, seed=args.seed, fixed=fixed))
        meta.update(finished_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    load_at_end=_load(), configs_recorded=len({r["config_id"] for r in rows}))
        write_table(rows, args.out, meta)
    print(f"wrote {len(rows)} rows ({len({r['config_id'] for r in rows})} configurations) to {args.out} "
          f"in {time.perf_counter() - t_all:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.merge:
        return merge_tables(args.merge, args.out)
    if args.jobs < 1 or (args.jobs > 1 and args.shard != (0, 1)):
        print(f"error: --jobs={args.jobs}: expected >= 1, and not with --shard", file=sys.stderr)
        return 2
    if args.jobs > 1:
        return run_jobs(args, n_configs=len(grid_configs(args.grid)[: args.only]))
    return record(args)


if __name__ == "__main__":
    sys.exit(main())
