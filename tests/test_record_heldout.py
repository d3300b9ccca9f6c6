"""bench/record_curves.py --grid heldout: the held-out table's configurations (local_k x alpha x lr at
batch 32, lambda_lsa 0.5) are valid training configurations, shard processes inherit the grid, and the
main grid's recordings keep their settings (a resumed recording compares them)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_heldout_grid_is_every_combination_and_each_is_a_valid_config(rec, tmp_path):
    configs = rec.grid_configs("heldout")
    assert configs == [{"local_k": k, "alpha": a, "lr": lr}
                       for k, a, lr in itertools.product((5, 10, 20), (0.0, 2.0), (5e-5, 1e-4))]
    fixed = rec.GRIDS["heldout"][1]
    for params in configs:
        cfg = rec.trial_config(params, steps=8, seed=0, cache_dir=tmp_path, fixed=fixed)
        assert (cfg.batch_size, cfg.lambda_lsa, cfg.local_k, cfg.alpha, cfg.lr) == (
            32, 0.5, params["local_k"], params["alpha"], params["lr"])
    # the main grid is what its recordings were made with
    assert rec.grid_configs() == [dict(zip(rec.GRID, v, strict=True)) for v in itertools.product(*rec.GRID.values())]
    assert rec.GRIDS["main"][1] == {}


def test_shard_processes_inherit_the_grid(rec, tmp_path):
    args = argparse.Namespace(eval_at=[6, 96], seed=1, grid="heldout", cache_dir=tmp_path, only=None,
                              out=tmp_path / "h.parquet")
    for cmd, _ in rec.shard_commands(args, jobs=2):
        assert cmd[cmd.index("--grid") + 1] == "heldout"


def test_an_unknown_grid_is_refused_before_any_work(rec, capsys):
    with pytest.raises(SystemExit) as exc:
        rec.main(["--grid", "nope"])
    assert exc.value.code == 2
    assert "--grid: invalid choice: 'nope'" in capsys.readouterr().err
