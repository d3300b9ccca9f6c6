"""Orchestration overhead of a sweep: the share of its wall time spent inside trial compute.

    inside = sum over trials of the trial's own wall time (Trainer.fit up to its last report)
    share  = inside / (sweep wall time x max_concurrent slots)

Everything else (Ray start, driver-side base-data preparation, actor start, checkpoint copies,
result writes, scheduling gaps) is overhead. Target: share >= 0.90 on the quickstart sweep.
Run: .venv/bin/python bench/bench_sweep_overhead.py [SPEC] (default quickstart; SPEC may be a path)
"""

from __future__ import annotations

import sys
import tempfile
import time


def main() -> None:
    import sweeps
    from analysis.store import ResultStore

    spec_name = sys.argv[1] if len(sys.argv) > 1 else "quickstart"
    with tempfile.TemporaryDirectory(prefix="sage-bench-") as tmp:
        spec = sweeps.load_spec(spec_name, storage=f"{tmp}/sweep")
        t0 = time.perf_counter()
        outcome = sweeps.run(spec, progress=False)
        wall = time.perf_counter() - t0
        rows = ResultStore(f"{tmp}/sweep/results").read().to_pylist()
    last: dict[str, float] = {}
    for r in rows:
        last[r["trial_id"]] = max(last.get(r["trial_id"], 0.0), r["wall_s"])
    inside = sum(last.values())
    slots = spec.search.max_concurrent
    print(f"spec {spec_name}: {outcome.state}, {len(last)} trials, {len(rows)} rows, {slots} slots")
    print(f"sweep wall {wall:.1f}s; inside trials {inside:.1f}s; share = {inside / (wall * slots):.3f} "
          f"(target >= 0.90)")


if __name__ == "__main__":
    main()
