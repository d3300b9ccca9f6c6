"""Pareto front + hypervolume on 1M and 10M synthetic rows, and the quadratic NOT EXISTS query.

Prints wall times (best of --repeat) and ratios measured side by side in one run:
  python bench/bench_pareto.py            # 1M and 10M rows, NOT EXISTS at 10k
  python bench/bench_pareto.py --sizes 100000 --quadratic 5000
The front runs in SQL (sort + running minimum via window functions, O(n log n)); the hypervolume
of the front in numpy. The synthetic points are uniform in [0, 1]^2 (asr minimised, tifa
maximised), so the front is small (~ln n points), as in real sweeps.
"""

from __future__ import annotations

import argparse
import os

import duckdb
from timing import best_of


def _table(con: duckdb.DuckDBPyConnection, name: str, n: int) -> None:
    con.sql(f"CREATE OR REPLACE TABLE {name} AS SELECT 't' || i AS trial_id, random() AS asr, "
            f"random() AS tifa FROM range({n}) r(i)")


NOT_EXISTS = """SELECT * FROM {t} p WHERE NOT EXISTS (SELECT 1 FROM {t} q WHERE q.asr <= p.asr
  AND q.tifa >= p.tifa AND (q.asr < p.asr OR q.tifa > p.tifa))"""


def main() -> None:
    import analysis

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--quadratic", type=int, default=10_000, help="rows for the NOT EXISTS comparison")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    con = duckdb.connect()
    con.sql("SELECT setseed(0.42)").fetchall()
    load = os.getloadavg()
    threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
    print(f"duckdb {duckdb.__version__}, threads {threads}, "
          f"cpus {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    def front_and_hv(table: str):
        front = analysis.pareto_front(con, table=table, x="asr", y="tifa", steps="all")
        return front, analysis.hypervolume(front, x="asr", y="tifa", ref=(1.0, 0.0))

    times = {}
    for n in args.sizes:
        _table(con, "pts", n)
        t, (front, hv) = best_of(lambda: front_and_hv("pts"), args.repeat)
        times[n] = t
        print(f"front + hypervolume, {n:>11,} rows: {t:7.3f} s  (front {len(front)} points, hv {hv:.6f})")
    sizes = sorted(times)
    for a, b in zip(sizes, sizes[1:]):
        print(f"ratio time({b:,}) / time({a:,}) = {times[b] / times[a]:.2f} (rows x{b / a:.0f})")

    n = sizes[0]
    con.sql(f"CREATE OR REPLACE TABLE worst AS SELECT 't' || i AS trial_id, x AS asr, x AS tifa "
            f"FROM (SELECT i, random() AS x FROM range({n}) r(i))")
    t_worst, (front, _) = best_of(lambda: front_and_hv("worst"), 1)
    print(f"worst case, {n:,} rows all on the front (tifa = asr): {t_worst:.3f} s "
          f"(ratio to uniform: {t_worst / times[n]:.1f}x; includes returning {len(front):,} front rows)")

    q = args.quadratic
    _table(con, "small", q)
    t_win, (front, _) = best_of(lambda: front_and_hv("small"), args.repeat)
    t_ne, ne = best_of(lambda: con.sql(NOT_EXISTS.format(t="small")).df(), 1)
    assert set(ne["trial_id"]) == set(front["trial_id"]), "window and NOT EXISTS fronts differ"
    print(f"{q:,} rows: window front + hv {t_win:.4f} s, NOT EXISTS front {t_ne:.4f} s, "
          f"ratio NOT EXISTS / window = {t_ne / t_win:.1f}x (same {len(front)} points)")


if __name__ == "__main__":
    main()
