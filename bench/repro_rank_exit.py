"""Issue 27: do two-rank runs end cleanly? Counts exit codes of fresh-process runs (no ``os._exit``).

``train`` mode: N two-rank trainings of the tiny CLIP, each rank a fresh process started as a
launcher starts it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): ``--launcher deepspeed`` (rank 0
hosts the rendezvous store, LOCAL_SIZE set so DeepSpeed maps its shm all-reduce buffers) or
``torchrun`` (this parent holds the store, as torchrun's agent does). Each rank trains with
``micro_batch_size=2`` (DeepSpeed starts the group and loads its shm comm op), writes its result and
the names of its native threads, and leaves through the normal interpreter exit. Ranks run with
``PYTHONFAULTHANDLER=1`` and core dumps on; a rank killed by a signal gets a gdb backtrace of every
thread from its core (``core_pattern`` must be a relative ``core``) in ``OUT/run_NNN/gdb.txt``.

``tune`` mode: N two-worker trials (Ray Train ``TorchTrainer`` of 2 gloo workers) in one sweep, one
trial at a time; counts how Tune records each trial and which Ray worker logs show a native abort.

    python bench/repro_rank_exit.py train --launcher deepspeed --runs 50 --out /tmp/rank-exit
    python bench/repro_rank_exit.py tune --runs 20 --out /tmp/rank-exit-tune
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))  # the op `make env` built

TINY_TEXT_EVAL = {"calibration_samples": 40, "attack_samples": 16, "util_groups": 1}


def _train_values(root: Path) -> dict:
    from tests.tiny_models import make_tiny_clip_encoder, write_tiny_prompt_sets

    enc = root / "enc"
    if not enc.exists():
        make_tiny_clip_encoder(enc)
    data = write_tiny_prompt_sets(root / "data")
    return dict(encoder=str(enc), max_length=16, batch_size=8, local_k=3, lr=0.5, adam_eps=10.0, epochs=1,
                max_steps=3, eval_every=3, micro_batch_size=2, seed=3, diag_samples=16, diag_k=4,
                concept_guidance_scale=None, concept_guidance_ratio=0.8, cache_dir=str(root / "cache"),
                text_eval=TINY_TEXT_EVAL, device="cpu", **data)


def rank_main(rank: int, world: int, port: int, values_file: str, out: str, launcher: str, destroy: bool) -> None:
    """One rank, as a launcher starts it: train, write the result, return (the interpreter exits)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if launcher == "deepspeed":
        # Rank 0 hosts the rendezvous store; LOCAL_SIZE makes DeepSpeed map its shm all-reduce buffers.
        os.environ["LOCAL_SIZE"] = str(world)
    else:  # torchrun: its agent holds the store, every rank is a client
        os.environ.update(LOCAL_WORLD_SIZE=str(world), TORCHELASTIC_USE_AGENT_STORE="True")
    import torch

    from sage_core.defs.config import load_config
    from sage_core.trainer import Trainer

    cfg = load_config(overrides=json.loads(Path(values_file).read_text()))
    try:
        res = Trainer(cfg, out_dir=out, progress=False, evaluate=False).fit()
    finally:
        if destroy and torch.distributed.is_initialized():  # what the test's rank helper did
            torch.distributed.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"step": res.step, "loss": res.metrics["loss"],
                                                         "threads_at_exit": _thread_names()}))


def _thread_names() -> list[str]:
    """The native threads of this process (``/proc/self/task/*/comm``): who is left to run at exit."""
    return sorted(Path(t, "comm").read_text().strip() for t in Path("/proc/self/task").iterdir())


def _core_backtrace(run_dir: Path) -> str:
    cores = sorted(run_dir.glob("core*"))
    if not cores or shutil.which("gdb") is None:
        return ""
    bt = subprocess.run(["gdb", "-batch", "-ex", "info threads", "-ex", "thread apply all bt 25",
                         sys.executable, str(cores[0])], capture_output=True, text=True, timeout=300).stdout
    (run_dir / "gdb.txt").write_text(bt)
    for core in cores:  # hundreds of MB each; the backtrace is what we keep
        core.unlink()
    return bt


def _enable_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def one_train_run(i: int, values_file: Path, out: Path, *, launcher: str, destroy: bool, world: int = 2) -> dict:
    import torch.distributed as dist

    run_dir = out / f"run_{i:03d}"
    run_dir.mkdir(parents=True)
    if launcher == "torchrun":
        store = dist.TCPStore("127.0.0.1", 0, None, True, wait_for_workers=False)
        port = store.port
    else:
        from sage_core.distributed import free_port

        store, port = None, free_port()
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    errs = [open(run_dir / f"rank{r}.err", "w") for r in range(world)]  # faulthandler's and the runtime's words
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_rank", str(r), str(world),
                               str(port), str(values_file), str(run_dir / "train"), launcher, str(int(destroy))],
                              cwd=run_dir, env=env, stdout=subprocess.DEVNULL, stderr=errs[r],
                              preexec_fn=_enable_cores) for r in range(world)]
    codes = [p.wait(timeout=900) for p in procs]
    for err in errs:
        err.close()
    del store
    wrote = [(run_dir / "train" / f"rank{r}.json").exists() for r in range(world)]
    bad = [c for c in codes if c != 0]
    bt = _core_backtrace(run_dir) if any(c < 0 for c in codes) else ""
    threads = sorted({t for r in range(world) if wrote[r]
                      for t in json.loads((run_dir / "train" / f"rank{r}.json").read_text())["threads_at_exit"]})
    if not bad:
        shutil.rmtree(run_dir)
    return {"run": i, "codes": codes, "wrote": wrote, "backtrace": bool(bt), "threads": threads}


def train_mode(args) -> dict:
    import torch

    from sage_core.defs.config import load_config
    from sage_core.trainer import Trainer

    args.out.mkdir(parents=True, exist_ok=True)
    values = _train_values(args.out / "setup")
    values_file = args.out / "setup" / "values.json"
    values_file.write_text(json.dumps(values))
    torch.set_num_threads(1)
    # One process fills the base cache first (as the test's single-process run does).
    Trainer(load_config(overrides=values), out_dir=args.out / "setup" / "one", progress=False, evaluate=False).fit()
    runs = []
    deadline = time.monotonic() + args.minutes * 60
    for i in range(args.runs):
        if time.monotonic() > deadline:
            break
        runs.append(one_train_run(i, values_file, args.out, launcher=args.launcher, destroy=args.destroy))
        print(json.dumps(runs[-1]), flush=True)
    return {"mode": "train", "launcher": args.launcher, "destroy": args.destroy, "runs": len(runs),
            "codes": _tally(c for r in runs for c in r["codes"]),
            "runs_with_a_bad_exit": sum(any(c != 0 for c in r["codes"]) for r in runs),
            "runs_missing_a_result": sum(not all(r["wrote"]) for r in runs)}


def _tally(codes) -> dict[str, int]:
    def name(c: int) -> str:
        return signal.Signals(-c).name if c < 0 else f"exit {c}"

    return dict(collections.Counter(name(c) for c in codes))


def _signalled_workers(session: Path) -> dict[str, int]:
    """Ray worker logs that show a native abort or a fatal signal (faulthandler or C++ runtime)."""
    marks = {"terminate called": 0, "Fatal Python error": 0, "SIGABRT": 0, "SIGSEGV": 0}
    for log in (session / "logs").glob("*.err"):
        text = log.read_text(errors="replace")
        for mark in marks:
            marks[mark] += mark in text
    return marks


def tune_mode(args) -> dict:
    import ray

    import sweeps
    from tests.test_sweep_run import _rows, tiny_spec

    os.environ["PYTHONFAULTHANDLER"] = "1"
    args.out.mkdir(parents=True, exist_ok=True)
    grid = [round(0.1 * k, 1) for k in range(args.runs)]
    spec = tiny_spec(args.out, space={"lambda_esp": {"grid": grid}}, search={"algorithm": "grid", "max_concurrent": 1},
                     resources={"cpus": 1, "workers": 2}, max_failures=0)
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1"}})
    try:
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        outcome = sweeps.run(str(spec), progress=False)
        marks = _signalled_workers(session)
    finally:
        ray.shutdown()
    rows = _rows(args.out / "sweep")
    finals = collections.Counter(r["status"] for r in rows if r["step"] == 4)
    errors = list((args.out / "sweep" / "ray" / "tune").glob("*/error.txt"))
    return {"mode": "tune", "trials": len(grid), "state": outcome.state, "counts": dict(outcome.counts),
            "final_row_status": dict(finals), "rows": len(rows), "error_files": len(errors),
            "worker_log_marks": marks, "ray_session": str(session)}


def main() -> None:
    if sys.argv[1:2] == ["_rank"]:
        rank, world, port, values_file, out, launcher, destroy = sys.argv[2:9]
        rank_main(int(rank), int(world), int(port), values_file, out, launcher, destroy == "1")
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["train", "tune"])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--minutes", type=float, default=25.0, help="train mode: start no run after this")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--launcher", choices=["torchrun", "deepspeed"], default="torchrun",
                   help="train mode: the environment of which launcher (deepspeed adds LOCAL_SIZE)")
    p.add_argument("--destroy", action="store_true",
                   help="train mode: each rank calls destroy_process_group() after fit (as the test's helper did)")
    args = p.parse_args()
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    print(f"core_pattern={core_pattern!r}", flush=True)
    t0 = time.monotonic()
    summary = train_mode(args) if args.mode == "train" else tune_mode(args)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary), flush=True)
    (args.out / f"summary_{args.mode}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
