"""Driver cost per reported result: the store callback + the Pareto scheduler, as Tune calls them.

Feeds N synthetic results (default 1,000) of a sweep with ``--concurrent`` trials in flight through
the real ``ParetoSuccessiveHalving`` (state file on disk, written by its ``SchedulerStateCallback`` at
each experiment-state save, as the runner configures it) and the real
``StoreCallback`` (Parquet results store on disk), on real ``ray.tune`` ``Trial`` and ``Checkpoint``
objects, in the order Tune's controller calls them for one result:

    scheduler.on_trial_result -> (STOP: result["done"] = True) -> callback.on_trial_result
    -> callback.on_checkpoint (every report carries a checkpoint) -> on_trial_complete when it ends

and Tune's experiment-state save (``get_state`` of both callbacks) every ``--state-every`` results. A new trial
starts whenever one ends; which running trial reports next is a seeded draw. Two arms in one run,
same seed, same results:

    per-row  every hook's row written before the hook returns (what the callback did before: one
             Parquet file per hook call)
    batched  rows handed to the write-behind thread (the callback now); flushed and awaited at
             each experiment-state save and at the end

Prints p50/p95/max milliseconds per result (all hooks of one result together; the experiment-state
saves separately), the files written, and checks that the store holds one row per reported result.
Target: p95 <= 50 ms per result.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_driver.py [--results 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

METRICS = ("concept_auc", "util_sib", "concept_auc_abs", "attack_auc", "asr_text", "asr_text_selfcal",
           "util_text", "util_sib_cos", "util_sib_len", "util_mrr", "util_r1", "fidelity_abs",
           "spread_ratio", "jaccard", "distortion")
RUNGS = (20, 40, 80, 160)
TOTAL = 200
EVERY = 20


def synthetic_result(rng: random.Random, *, quality: float, step: int) -> dict:
    """Text metrics that improve with the step at a trial-specific rate, with seeded noise."""
    frac = step / TOTAL
    out: dict[str, float] = {}
    for i, name in enumerate(METRICS):
        v = min(1.0, max(0.0, 0.5 + 0.4 * quality * frac + 0.05 * rng.gauss(0, 1) + 0.01 * i))
        out[name] = v
        if name in ("concept_auc", "util_sib", "concept_auc_abs", "util_text"):
            out[f"{name}_lo"], out[f"{name}_hi"] = v - 0.03, v + 0.03
    out.update(step=step, total_steps=TOTAL, epoch=0, final=float(step >= TOTAL), trial_wall_s=3.0 * step,
               trial_device_s=3.0 * step, training_iteration=step // EVERY, time_total_s=3.0 * step)
    return out


def _arm(mode: str, *, n_results: int, concurrent: int, state_every: int, seed: int) -> dict:
    from ray.tune import Checkpoint

    import sweeps
    from sweeps.pareto_scheduler import ParetoSuccessiveHalving, SchedulerStateCallback
    from sweeps.spec import base_train_config
    from sweeps.store_callback import StoreCallback

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sage-bench-driver-") as tmp:
        spec = sweeps.load_spec("quickstart", storage=tmp)
        base = base_train_config(spec, storage_root=Path(tmp))
        results_root = f"{tmp}/results"
        sched = ParetoSuccessiveHalving(metrics=spec.objective_metrics(), modes=spec.objective_modes(),
                                        rungs=list(RUNGS), eta=2, state_path=f"{tmp}/scheduler_state.json")
        sched_cb = SchedulerStateCallback(sched)  # Tune calls its get_state at every experiment-state save
        cb = StoreCallback(results_root=results_root, sweep_id="bench", base=base, variants=spec.variants)
        call = _caller(cb, per_row=mode == "per-row")
        trials: list = []
        running: dict[str, tuple] = {}  # trial id -> (trial, quality, next step)
        # per_result: seconds to feed one result; scheduler: the scheduler's part of it
        timed: dict[str, list[float]] = {"per_result": [], "scheduler": [], "state_saves": []}
        fed: set[tuple[str, int]] = set()
        while len(timed["per_result"]) < n_results:
            _top_up(running, trials, rng=rng, concurrent=concurrent)
            tid = rng.choice(sorted(running))
            trial, quality, step = running[tid]
            result = synthetic_result(rng, quality=quality, step=step)
            checkpoint = Checkpoint(path=f"{tmp}/ray/tune/{tid}/checkpoint_{step // EVERY - 1:06d}")
            ended = _feed(sched, call, trials=trials, trial=trial, result=result, checkpoint=checkpoint, timed=timed)
            fed.add((tid, step))
            if ended:
                del running[tid]
            else:
                running[tid] = (trial, quality, step + EVERY)
            if len(timed["per_result"]) % state_every == 0:
                timed["state_saves"].append(_seconds(lambda: (cb.get_state(), sched_cb.get_state())))
        end_s = _seconds(lambda: (cb.on_experiment_end(trials=trials), sched_cb.on_experiment_end(trials=trials)))
        files = _check_store(results_root, fed=fed, mode=mode)
        return {**timed, "end_s": end_s, "files": files, "trials": len(trials), "pruned": len(sched.pruned)}


def _caller(cb, *, per_row: bool) -> Callable[..., None]:
    """Call a StoreCallback hook; the per-row arm flushes after each one (a write per row)."""
    hooks = ("on_trial_result", "on_checkpoint", "on_trial_complete", "on_trial_error")

    def call(hook: str, **kw) -> None:
        getattr(cb, hook)(**kw)
        if per_row and hook in hooks:
            cb.flush()

    return call


def _top_up(running: dict[str, tuple], trials: list, *, rng: random.Random, concurrent: int) -> None:
    """Start trials (random lambda_esp, lambda_lsa and quality) until ``concurrent`` run."""
    from ray.tune.experiment import Trial

    while len(running) < concurrent:
        params = {"lambda_esp": rng.choice([0.0, 0.5, 1.0, 2.0]), "lambda_lsa": rng.choice([0.0, 0.05, 0.1])}
        trial = Trial("train_trial", config=params, trial_id=f"t{len(trials):05d}", stub=True)
        trials.append(trial)
        running[trial.trial_id] = (trial, rng.random(), EVERY)


def _feed(sched, call, *, trials: list, trial, result: dict, checkpoint, timed: dict[str, list[float]]) -> bool:
    """Feed one result as Tune's driver does (scheduler, then the callback's result, checkpoint and
    completion hooks); records its seconds in ``timed``; True when the trial ended."""
    from ray.tune.schedulers import TrialScheduler

    n = len(timed["per_result"])
    t0 = time.perf_counter()
    decision = sched.on_trial_result(None, trial, dict(result))
    timed["scheduler"].append(time.perf_counter() - t0)
    if decision == TrialScheduler.STOP:
        result["done"] = True
    call("on_trial_result", iteration=n, trials=trials, trial=trial, result=result)
    call("on_checkpoint", iteration=n, trials=trials, trial=trial, checkpoint=checkpoint)
    ended = result["done"] if "done" in result else result["step"] >= TOTAL
    if ended:
        sched.on_trial_complete(None, trial, result)
        call("on_trial_complete", iteration=n, trials=trials, trial=trial, result=result)
    timed["per_result"].append(time.perf_counter() - t0)
    return bool(ended)


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _check_store(results_root: str, *, fed: set[tuple[str, int]], mode: str) -> int:
    """The store must hold exactly the fed keys; returns its number of files."""
    from analysis.store import ResultStore

    store = ResultStore(results_root)
    table = store.read()
    keys = {(r["trial_id"], r["step"]) for r in table.select(["trial_id", "step"]).to_pylist()}
    if keys != fed:
        raise SystemExit(f"{mode}: the store holds {len(keys)} keys, {len(fed)} results were fed")
    return len(store.files())


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3  # noqa: E731
    return f"p50 {p(0.50):7.2f}  p95 {p(0.95):7.2f}  max {xs[-1] * 1e3:7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=int, default=1000)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--state-every", type=int, default=25, help="results between experiment-state saves")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"cpus {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.results} results, {args.concurrent} trials in flight, experiment state every "
          f"{args.state_every} results, seed {args.seed}")
    out = {}
    for mode in ("per-row", "batched"):
        r = _arm(mode, n_results=args.results, concurrent=args.concurrent, state_every=args.state_every,
                 seed=args.seed)
        out[mode] = r
        print(f"{mode:8s} per result        {_ms(r['per_result'])}   ({r['trials']} trials, {r['pruned']} pruned)")
        print(f"{mode:8s}  of which scheduler {_ms(r['scheduler'])}")
        callback = [a - b for a, b in zip(r["per_result"], r["scheduler"], strict=True)]
        print(f"{mode:8s}  of which callback  {_ms(callback)}")
        print(f"{mode:8s} experiment state  {_ms(r['state_saves'])}   end of experiment {r['end_s'] * 1e3:.1f} ms; "
              f"{r['files']} Parquet files")
    a, b = (sorted(out[m]["per_result"]) for m in ("per-row", "batched"))
    p95 = lambda xs: xs[min(len(xs) - 1, int(0.95 * len(xs)))]  # noqa: E731
    print(f"p95 per result: batched {p95(b) * 1e3:.2f} ms (target <= 50), per-row/batched = {p95(a) / p95(b):.1f}x; "
          f"total driver time per-row/batched = {sum(a) / sum(b):.1f}x")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
