"""analysis.dominance (numpy) against moocore, side by side in one run: non-dominated ranks, the
front alone and hypervolume on seeded uniform points (minimised), and agreement of the answers.

  python bench/bench_dominance.py                      # 2-D: 1e3..1e6 rows, 3-D: 1e3..1e5
  python bench/bench_dominance.py --sizes2 10000 --sizes3 2000

moocore was the ranking library before analysis.dominance; it stays the hypervolume backend.
"""

from __future__ import annotations

import argparse

import moocore
import numpy as np

from analysis import dominance
from timing import best_of


def _row(pts: np.ndarray, repeat: int) -> None:
    t_np, ours = best_of(lambda: dominance.nondominated_ranks(pts), repeat)
    t_mc, theirs = best_of(lambda: np.asarray(moocore.pareto_rank(pts)), repeat)
    same = bool(np.array_equal(ours, theirs))
    print(f"k={pts.shape[1]} n={len(pts):>9,}: ranks numpy {t_np:8.3f} s, moocore {t_mc:8.3f} s, "
          f"ratio {t_np / max(t_mc, 1e-9):6.1f}x, fronts {int(ours.max()) + 1:>5}, same ranks: {same}")
    t_np, ours = best_of(lambda: dominance.front_mask(pts), repeat)
    t_mc, theirs = best_of(lambda: np.asarray(moocore.is_nondominated(pts, keep_weakly=True)), repeat)
    print(f"{'':15}front only: numpy {t_np:8.3f} s, moocore {t_mc:8.3f} s, ratio {t_np / max(t_mc, 1e-9):6.1f}x, "
          f"front {int(ours.sum()):>5}, same front: {bool(np.array_equal(ours, theirs))}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes2", type=int, nargs="*", default=[1_000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--sizes3", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for k, sizes in ((2, args.sizes2), (3, args.sizes3)):
        for n in sizes:
            _row(rng.random((n, k)), args.repeat)
    front = rng.random((2_000, 3))
    front = front[dominance.nondominated_ranks(front) == 0]
    ref = np.ones(3)
    t, hv = best_of(lambda: dominance.hypervolume(front, ref), args.repeat)
    print(f"hypervolume of a {len(front)}-point 3-D front: {t:.4f} s ({hv:.6f}, "
          f"moocore {moocore.hypervolume(front, ref=ref):.6f})")


if __name__ == "__main__":
    main()
