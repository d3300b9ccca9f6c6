"""Beside the refusals of ``test_hostile_inputs.py``, what the `sage` CLI keeps doing with damaged
or large inputs it accepts: it skips a bad file and keeps its neighbours (with a one-line warning,
checked in a real subprocess where Python prints outside the CLI), never reads a file being written,
says when --limit left rows out, reaches a live driver with stop, and says a large attack set's size
and time before it starts; and every settings model refuses non-finite numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from analysis.store import ResultStore
from sweeps.cli import main
from tests.hostile_world import build_world, rows, sweep_folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("world"))


def _sage_ok(capsys, argv: list[object]) -> tuple[str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    return out, err


def test_skip_bad_keeps_the_good_neighbours_of_a_mistyped_file(world: dict[str, Path], capsys) -> None:
    with pytest.warns(UserWarning, match="part-99999999999999999999-text.parquet"):
        out, _ = _sage_ok(capsys, ["sql", world["typed"], "SELECT typeof(step), count(*), sum(asr_text) FROM results "
                                   "GROUP BY 1", "--format", "csv", "--skip-bad"])
    # the good file's 4 rows, step still an integer and asr_text still a number: 0 + 0.1 + 0.2 + 0.3
    assert out.splitlines()[1].split(",")[:2] == ["BIGINT", "4"]
    assert float(out.splitlines()[1].split(",")[2]) == pytest.approx(0.6)


def test_files_being_written_are_never_read(tmp_path: Path, capsys) -> None:
    store = ResultStore(tmp_path / "results")
    store.write(rows())
    (tmp_path / "results" / "sweep_id=s1" / "_tmp-crashed.parquet").write_bytes(b"PAR1 half written")
    out, _ = _sage_ok(capsys, ["sql", tmp_path / "results", "SELECT count(*) AS n FROM results", "--format", "csv"])
    assert out.splitlines() == ["n", "4"]


def test_limit_says_when_rows_were_left_out(world: dict[str, Path], capsys) -> None:
    out, err = _sage_ok(capsys, ["sql", world["store"], "SELECT trial_id FROM results ORDER BY 1", "--limit", "3",
                                 "--format", "csv"])
    assert out.splitlines() == ["trial_id", "t0", "t1", "t2"]
    assert "more rows than --limit 3" in err


def test_stop_reaches_a_live_driver(world: dict[str, Path], tmp_path: Path, capsys) -> None:
    driver = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        folder = sweep_folder(tmp_path, "live", meta={"sweep_id": "q-1", "state": "running",
                                                       "driver_pid": driver.pid, "started": started})
        out, _ = _sage_ok(capsys, ["sweep", "stop", folder])
        assert "stop requested" in out and (folder / "STOP").is_file()
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)


def test_skip_bad_warning_is_one_clean_line_and_status_has_the_option(world: dict[str, Path]) -> None:
    """A real `sage` process (Python prints warnings outside the CLI's own output): the status the
    refusal above points to (`--skip-bad`) exists, reads the 4 good rows, and its warning is one
    line in the CLI's format, not ``file:line: UserWarning: ...`` plus the source line."""
    proc = subprocess.run([sys.executable, "-m", "sweeps", "sweep", "status", str(world["sw_badstore"]), "--skip-bad"],
                          check=False, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 0, proc.stderr
    bad = world["sw_badstore"] / "results" / "sweep_id=quickstart-1" / "part-99999999999999999999-bad.parquet"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: skipped 1 bad file(s) in '{world['sw_badstore'] / 'results'}': {bad} ("), proc.stderr
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert "4 result rows" in proc.stdout  # rows() writes 4


def _models(packages: tuple[str, ...]) -> set[type]:
    import importlib
    import pkgutil

    from pydantic import BaseModel

    for name in packages:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found, todo = set(), list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in packages:
            found.add(cls)
    return found


def test_every_settings_model_refuses_non_finite_numbers() -> None:
    """One place (``sage_core.defs.strict_values.STRICT_MODEL``) and every model of the packages uses
    it: a model added later without it fails here, not in a user's 114-second degenerate run."""
    models = _models(("sage_core", "sweeps"))
    names = {m.__name__ for m in models}
    assert {"TrainConfig", "EvalConfig", "ProximalConfig", "RobustConfig", "ImageRobustConfig", "SweepSpec",
            "Uniform"} <= names, names
    assert sorted(m.__qualname__ for m in models if m.model_config.get("allow_inf_nan", True)) == []
    assert sorted(m.__qualname__ for m in models if m.model_config.get("extra") != "forbid") == []


def test_a_large_attack_set_says_its_size_and_time_first_then_shows_progress(tiny_clip, tmp_path: Path,
                                                                             capsys) -> None:
    from sage_core.evaluation.workload import LARGE
    from tests.conftest import benign_prompts, write_prompts

    n = LARGE + 152
    sets = benign_prompts(192)  # every prompt distinct and none a probe-fitting prompt: all n are kept
    attack = write_prompts(tmp_path / "big.csv", [f"{sets[i % 192]} number {i}" for i in range(n)])
    _, err = _sage_ok(capsys, ["eval", tiny_clip, "--base", tiny_clip, "--attack", f"big={attack}", "--set", "attack_samples=null",
                               "--set", "calibration_samples=40", "--set", "geometry_samples=20", "--set",
                               "geometry_k=4", "--set", "util_groups=1", "--set", "bootstrap_samples=0",
                               "--set", "batch_size=64", "--out", tmp_path / "store", "--cache-dir", tmp_path / "c"])
    first = err.index(f"attack sets: 'big' {n:,} prompts, {n:,} in all (every prompt (attack_samples=null))")
    assert f"({2 * n:,} encoder passes) takes about " in err  # the base (nothing cached yet) and the aligned
    assert "ms a prompt, timed on 64)" in err
    assert first < err.index("base attack-big") < err.index("aligned big")  # said first, then the bars
    assert len(ResultStore(tmp_path / "store").read()) == 1
