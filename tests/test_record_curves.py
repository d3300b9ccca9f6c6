"""bench/record_curves.py's table plumbing (no training): shard tables merge into one table that
equals an unsharded recording's settings; overlapping or mismatched shards are refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


SETTINGS = {"eval_at": [2, 4], "seed": 0, "grid": {"a": [1, 2, 3]}}


def _part(rec, path: Path, configs: list[int], *, shard: tuple[int, int], seed: int = 0) -> Path:
    rows = [{"config_id": c, "a": c + 1, "step": s, "concept_auc": 0.9 + 0.01 * c + 0.001 * s}
            for c in configs for s in (2, 4)]
    rec.write_table(rows, path, {"command": f"part {shard}", "settings": {**SETTINGS, "seed": seed,
                                                                          "shard": list(shard)}})
    return path


def test_shards_merge_into_one_table_with_unsharded_settings(rec, tmp_path, capsys):
    a = _part(rec, tmp_path / "p0", [0, 2], shard=(0, 2))
    b = _part(rec, tmp_path / "p1", [1], shard=(1, 2))
    out = tmp_path / "all.parquet"
    assert rec.merge_tables([a, b], out) == 0
    rows, meta = rec.read_rows(out)
    assert [(r["config_id"], r["step"]) for r in rows] == [(c, s) for c in range(3) for s in (2, 4)]
    assert [r["concept_auc"] for r in rows] == pytest.approx([0.9 + 0.01 * c + 0.001 * s for c in range(3)
                                                              for s in (2, 4)])
    assert meta["settings"] == SETTINGS  # no shard: a rerun without --shard resumes this table
    assert [s["command"] for s in meta["shards"]] == ["part (0, 2)", "part (1, 2)"]
    assert pq.read_table(out).num_rows == 6


def test_overlapping_or_mismatched_shards_are_refused(rec, tmp_path, capsys):
    a = _part(rec, tmp_path / "p0", [0, 1], shard=(0, 2))
    b = _part(rec, tmp_path / "p1", [1], shard=(1, 2))
    c = _part(rec, tmp_path / "p2", [2], shard=(1, 2), seed=1)
    out = tmp_path / "all.parquet"
    assert rec.merge_tables([a, b], out) == 2
    assert "share configurations" in capsys.readouterr().err
    assert rec.merge_tables([a, c], out) == 2
    assert "different settings" in capsys.readouterr().err
    assert not out.exists()


def test_shard_commands_carry_the_parsed_settings_and_refuse_an_existing_table(rec, tmp_path, capsys):
    import argparse

    out = tmp_path / "curves.parquet"
    args = argparse.Namespace(eval_at=[6, 12, 24], seed=1, cache_dir=tmp_path / "cache", only=3, out=out, jobs=2)
    shards = rec.shard_commands(args, jobs=2)
    assert [part.name for _, part in shards] == ["curves.parquet.part0", "curves.parquet.part1"]
    for k, (cmd, part) in enumerate(shards):
        flags = dict(zip(cmd[2::2], cmd[3::2]))
        assert flags == {"--eval-at": "6,12,24", "--seed": "1", "--cache-dir": str(tmp_path / "cache"),
                         "--only": "3", "--shard": f"{k}/2", "--out": str(part)}
    args.first = (2, 0)  # --first travels to every shard (each records its own ids of it first)
    assert all(dict(zip(cmd[2::2], cmd[3::2]))["--first"] == "2,0" for cmd, _ in rec.shard_commands(args, jobs=2))
    out.write_bytes(b"an earlier table")
    assert rec.run_jobs(args, n_configs=3) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier table"
    with pytest.raises(SystemExit):  # no abbreviations: --job is not --jobs
        rec.main(["--job", "2", "--out", str(tmp_path / "x.parquet")])
