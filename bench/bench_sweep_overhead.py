"""Orchestration overhead of a sweep: the share of its wall time spent inside trial compute.

    inside = sum over trials of the trial's own wall time (Trainer.fit up to its last report)
    share  = inside / (sweep wall time x max_concurrent slots)

Everything else (Ray start, driver-side base-data preparation, actor start, checkpoint copies,
result writes, scheduling gaps) is overhead. Two arms in one run, same spec and machine:

    cold  fresh storage and an empty user-level cache: the driver embeds every training prompt once
    warm  fresh storage (a new sweep folder), the same user-level cache, which the cold arm filled:
          what every later sweep on the same encoder and prompts sees by default (the cache is
          ``$SAGE_CACHE_DIR``, else ``~/.cache/sage-sweeps``, keyed by encoder weights, prompts and
          length; before, it lived in ``<storage>/cache`` and every new sweep folder started cold)

The bench points ``SAGE_CACHE_DIR`` at a temporary folder (never the user's cache), passes no cache
setting to the sweeps, and checks that the warm arm wrote no cache entry (nothing built twice).

Target: share >= 0.90 on the quickstart sweep.
Run: .venv/bin/python bench/bench_sweep_overhead.py [SPEC] (default quickstart; SPEC may be a path)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def _entries(cache: str) -> dict[str, int]:
    """Cache entries (safetensors files) and their modification times."""
    return {str(p): p.stat().st_mtime_ns for p in Path(cache).rglob("*.safetensors")}


def _arm(spec_name: str, storage: str) -> tuple[float, float, int, int, int, str]:
    import sweeps
    from analysis.store import ResultStore

    spec = sweeps.load_spec(spec_name, storage=storage)
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
        os.environ["SAGE_CACHE_DIR"] = f"{tmp}/user-cache"
        before: dict[str, int] = {}
        for arm in ("cold", "warm"):
            wall, inside, trials, rows, slots, state = _arm(spec_name, f"{tmp}/{arm}")
            shares[arm] = inside / (wall * slots)
            after = _entries(f"{tmp}/user-cache")
            built = sum(1 for k, v in after.items() if before.get(k) != v)
            before = after
            print(f"{arm}: {state}, {trials} trials, {rows} rows, {slots} slots; sweep wall {wall:.1f}s; "
                  f"inside trials {inside:.1f}s; share = {shares[arm]:.3f} (target >= 0.90); "
                  f"cache entries built {built} of {len(after)}")
    print(f"ratio warm/cold share = {shares['warm'] / shares['cold']:.2f}")


if __name__ == "__main__":
    main()
