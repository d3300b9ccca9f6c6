"""`sage eval` end to end on a tiny checkpoint: table, rows in the result store, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import benign_prompts, write_prompts


@pytest.fixture(scope="module")
def ckpt(tiny_clip, tmp_path_factory):
    from sage_core.encoders import load_encoder

    d = tmp_path_factory.mktemp("ckpt") / "step_000004"
    load_encoder(tiny_clip, max_length=16).save(d)
    (d / "meta.json").write_text(json.dumps({"config": {"encoder": str(tiny_clip), "max_length": 16}, "step": 4}))
    return d


SMALL = ["--set", "calibration_samples=100", "--set", "geometry_samples=20", "--set", "geometry_k=4",
         "--set", "attack_samples=10", "--set", "util_groups=1"]


def _run(args):
    from sweeps.cli import app

    return CliRunner().invoke(app, args)


def test_eval_text_prints_table_and_writes_rows(ckpt, tmp_path):
    attack = write_prompts(tmp_path / "toy.csv", benign_prompts(5))
    res = _run(["eval", str(ckpt), "--attack", f"toy-set={attack}", "--out", str(tmp_path / "store"),
                "--cache-dir", str(tmp_path / "cache"), *SMALL])
    assert res.exit_code == 0, res.output
    assert "asr_text_toy_set" in res.output and "util_text_spatial" in res.output
    from analysis.store import ResultStore

    table = ResultStore(str(tmp_path / "store")).read()
    row = table.to_pylist()[0]
    assert (row["sweep_id"], row["trial_id"], row["step"], row["fidelity"]) == ("eval", "step_000004", 4, "text")
    assert row["util_text"] == 1.0 and row["base_asr_text_toy_set"] == row["asr_text_toy_set"]


def test_eval_user_mistakes_are_one_line_errors(ckpt, tmp_path, capsys):
    from sweeps.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("text\nx\n")
    for args, msg in [
        (["eval", str(ckpt), "--attack", f"b={bad}", *SMALL], "no 'prompt' column"),
        (["eval", str(ckpt), "--set", "attack_set=x"], "did you mean 'attack_sets'"),
        (["eval", str(ckpt), "--fidelity", "video"], "allowed are 'text' and 'image'"),
        (["eval", str(tmp_path / "missing")], "no such folder"),
        (["eval", str(ckpt), "--fidelity", "image"], "needs sd_model"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "c")])
        assert exc.value.code == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Loading weights" not in ln]
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err


def test_eval_help_teaches():
    res = _run(["eval", "--help"])
    assert res.exit_code == 0
    for word in ("--fidelity", "--attack", "--calibrate", "sd_model", "Examples"):
        assert word in res.output
