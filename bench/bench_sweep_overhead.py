"""Orchestration overhead of a sweep: the share of its wall time spent inside trial compute.

    inside = sum over trials of the trial's own wall time (Trainer.fit up to its last report)
    share  = inside / (sweep wall time x max_concurrent slots)

Everything else (Ray start, driver-side base-data preparation, actor start, checkpoint copies,
result writes, scheduling gaps) is overhead. Two arms in one run, same spec and machine:

    cold  fresh storage and an empty base-data cache: the driver embeds every training prompt once
    warm  fresh storage, the cache the cold arm filled (what every later sweep on the same encoder
          and prompts sees: the cache is keyed by encoder weights, prompts and length)

Target: share >= 0.90 on the quickstart sweep.
Run: .venv/bin/python bench/bench_sweep_overhead.py [SPEC] (default quickstart; SPEC may be a path)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time


def _arm(spec_name: str, storage: str, cache: str) -> tuple[float, float, int, int, int, str]:
    import sweeps
    from analysis.store import ResultStore

    spec = sweeps.load_spec(spec_name, storage=storage, overrides={"train.cache_dir": cache})
    t0 = time.perf_counter()
    outcome = sweeps.run(spec, progress=False)
    wall = time.perf_counter() - t0
    rows = ResultStore(f"{storage}/results").read().to_pylist()
    last: dict[str, float] = {}
    for r in rows:
        last[r["trial_id"]] = max(last.get(r["trial_id"], 0.0), r["wall_s"])
    return wall, sum(last.values()), len(last), len(rows), spec.search.max_concurrent, outcome.state


def main() -> None:
    spec_name = sys.argv[1] if len(sys.argv) > 1 else "quickstart"
    print(f"spec {spec_name}; cpus {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shares = {}
    with tempfile.TemporaryDirectory(prefix="sage-bench-") as tmp:
        for arm in ("cold", "warm"):
            wall, inside, trials, rows, slots, state = _arm(spec_name, f"{tmp}/{arm}", f"{tmp}/cache")
            shares[arm] = inside / (wall * slots)
            print(f"{arm}: {state}, {trials} trials, {rows} rows, {slots} slots; sweep wall {wall:.1f}s; "
                  f"inside trials {inside:.1f}s; share = {shares[arm]:.3f} (target >= 0.90)")
    print(f"ratio warm/cold share = {shares['warm'] / shares['cold']:.2f}")


if __name__ == "__main__":
    main()
