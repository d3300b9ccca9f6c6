"""How often does the running warm-start check (``sweeps/prior_agreement.py``) warn, on recorded curves?

Each pair of tables of ``bench/record_curves.py`` (one grid, two training seeds) is read as an earlier
sweep (one seed) and this sweep (the other): this sweep's finals arrive in a seeded random order and
are handed to the product's own ``PriorAgreement``, which checks once, after ``--after``
configurations. Printed per table pair and objective: the share of ``--orders`` orders in which the
check warned (signal share below 0.5), beside the signal share of the whole grid over the two seeds.
(The pooled share is symmetric in the two sweeps: which seed plays the earlier sweep does not
matter.) A useful check warns often where the warm start did worse than the grid (the held-out
table) and seldom where it helped (the development tables).

    .venv/bin/python bench/bench_prior_agreement.py [--orders 1000] [--after 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from replay_table import CurveTable, load_table  # noqa: E402

from analysis.reliability import signal_share  # noqa: E402
from sweeps.prior_agreement import PriorAgreement  # noqa: E402
from sweeps.warm_start import Prior, PriorTrial  # noqa: E402

DATA = ROOT / "bench" / "data"
PAIRS = {
    "development (24 configurations, 96 steps)": ("sage_minilm_curves.parquet", "sage_minilm_curves_seed1.parquet"),
    "held-out (12 configurations, 48 steps)": ("sage_minilm_curves_heldout.parquet",
                                               "sage_minilm_curves_heldout_seed1.parquet"),
}
OBJECTIVES = ("matched_auc", "util_sib", "concept_auc", "concept_auc_abs")


def _prior(table: CurveTable) -> Prior:
    trials = [PriorTrial(params=dict(p), metrics=dict(zip(table.objectives, map(float, table.values[i, -1]),
                                                          strict=True)), rungs={})
              for i, p in enumerate(table.params)]
    return Prior(source="earlier", sweep_id="earlier", trials=tuple(trials))


def warn_rate(earlier: CurveTable, here: CurveTable, *, orders: int, after: int) -> dict[str, float]:
    """Share of ``orders`` seeded arrival orders of ``here``'s finals in which the check warned, per
    objective."""
    prior = _prior(earlier)
    warned = dict.fromkeys(here.objectives, 0)
    for seed in range(orders):
        check = PriorAgreement(prior, here.objectives, after=after, resamples=50)
        for i in np.random.default_rng(seed).permutation(len(here.params)):
            values = dict(zip(here.objectives, map(float, here.values[i, -1]), strict=True))
            lines = check.observe(here.params[i], values)
            if lines:
                for metric in here.objectives:
                    warned[metric] += any(line.startswith(f"warning: {metric} ") for line in lines)
                break
    return {m: n / orders for m, n in warned.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--orders", type=int, default=1000, help="seeded arrival orders per direction")
    p.add_argument("--after", type=int, default=4, help="configurations run in both sweeps before the check")
    args = p.parse_args(argv)
    print(f"warm-start check after {args.after} configurations; share of {args.orders} arrival orders in which it "
          "warns (signal share < 0.5), and the whole grid's signal share over both seeds")
    for name, files in PAIRS.items():
        a, b = (load_table(DATA / f, objectives=OBJECTIVES) for f in files)
        n = len(a.params)
        rates = warn_rate(b, a, orders=args.orders, after=args.after)
        print(f"\n{name}")
        for j, metric in enumerate(OBJECTIVES):
            whole = signal_share(np.r_[a.values[:, -1, j], b.values[:, -1, j]], np.r_[np.arange(n), np.arange(n)])
            print(f"  {metric:<16} warns in {rates[metric]:.0%} of orders; whole grid {whole:.2f}")


if __name__ == "__main__":
    main()
