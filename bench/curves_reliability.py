"""How reliable is each objective on the recorded learning curves? (issue 23, item 4)

Reads the tables of ``bench/record_curves.py`` (one per training seed: the same 24-configuration
grid), turns them into one result store (a trial per configuration and seed, the seed as the
``seed`` column, exactly what a sweep with ``seeds: 2`` writes) and prints what ``sage reliability``
prints on it: per objective, the share of the between-configuration variance at the final step
that is signal (ICC(1), with its bootstrap interval), the smallest difference two configurations
must show to be told apart, and the rung-to-final Kendall tau. Then the two arms of the components
ablation that the grid holds, DES (lambda_esp = lambda_lsa = 0) and SAGE (lambda_esp 2,
lambda_lsa 0.1), at each learning rate: both seeds' final values and evaluation intervals.

    .venv/bin/python bench/curves_reliability.py [--tables SEED0.parquet SEED1.parquet]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.reliability import reliability_table  # noqa: E402
from analysis.store import ResultStore  # noqa: E402

DATA = ROOT / "bench" / "data"
TABLES = (DATA / "sage_minilm_curves.parquet", DATA / "sage_minilm_curves_seed1.parquet")
OBJECTIVES = ("matched_auc", "util_sib", "concept_auc", "concept_auc_abs", "fidelity_abs", "asr_text")
ARMS = {"DES": {"lambda_esp": 0.0, "lambda_lsa": 0.0}, "SAGE": {"lambda_esp": 2.0, "lambda_lsa": 0.1}}
TIMING = ("config_id", "wall_s", "train_s", "eval_s")


def common_configs(tables: dict[int, Path]) -> set[int]:
    """The configurations every table holds (a recording cut short holds fewer)."""
    sets = [set(pd.read_parquet(path, columns=["config_id"])["config_id"]) for path in tables.values()]
    return set.intersection(*sets)


def store_rows(tables: dict[int, Path], configs: set[int] | None = None) -> list[dict]:
    """One store row per (configuration, seed, evaluation step) of the recorded tables (only
    ``configs`` when given)."""
    rows = []
    for seed, path in tables.items():
        for r in pd.read_parquet(path).to_dict("records"):
            if configs is not None and r["config_id"] not in configs:
                continue
            rows.append({**{k: v for k, v in r.items() if k not in TIMING}, "sweep_id": "curves",
                         "trial_id": f"c{r['config_id']:02d}s{seed}", "fidelity": "text", "seed": seed})
    return rows


def arms_table(tables: dict[int, Path], objectives: list[str]) -> pd.DataFrame:
    """DES and SAGE at the final step: one row per (arm, lr, seed) with each objective and its interval."""
    rows = []
    for seed, path in tables.items():
        df = pd.read_parquet(path)
        final = df[df["step"] == df["step"].max()]
        for arm, knobs in ARMS.items():
            pick = final[(final["lambda_esp"] == knobs["lambda_esp"]) & (final["lambda_lsa"] == knobs["lambda_lsa"])]
            for _, r in pick.sort_values("lr").iterrows():
                row = {"arm": arm, "lr": r["lr"], "seed": seed}
                for m in objectives:
                    lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
                    row[m] = (f"{r[m]:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) and pd.notna(hi)
                              else f"{r[m]:.3f}")
                rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", type=Path, default=list(TABLES),
                        help="recorded tables, one per training seed (seed = position)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = parser.parse_args(argv)
    tables = dict(enumerate(args.tables))
    present = set(pd.read_parquet(args.tables[0]).columns)
    objectives = [m for m in args.objectives.split(",") if m in present]
    common = common_configs(tables)
    print(f"{len(common)} configurations in every table: {sorted(common)}")
    with tempfile.TemporaryDirectory() as tmp:
        ResultStore(Path(tmp) / "results").write(store_rows(tables, common))
        table = reliability_table(Path(tmp), objectives=objectives)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    for note in table.attrs["notes"]:
        print("note:", note)
    print()
    print(arms_table(tables, objectives).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
