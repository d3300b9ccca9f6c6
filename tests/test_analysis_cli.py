"""`sage pareto|ablation|sql|report`, the ablation layout, the report, and analysis' import isolation."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import analysis
from analysis.store import ResultStore
from sage_core.defs.errors import QueryError
from sweeps.cli import main


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder holding results/: a lambda_esp x local_k grid, text rungs and image finals."""
    root = tmp_path_factory.mktemp("sweep")
    rng = random.Random(7)
    rows = []
    grid = [(e, 15) for e in (0.0, 0.5, 1.0, 2.0, 4.0)] + [(2.0, k) for k in (5, 10, 20)]
    for t, (esp, k) in enumerate(grid):
        trial = f"t{t:04d}"
        base = {"sweep_id": "quick-1", "trial_id": trial, "method": "des" if esp == 0 else "sage",
                "lambda_esp": esp, "lambda_lsa": 0.1, "local_k": k, "alpha": 1, "lambda_safe": 0.3,
                "wall_s": 1.5, "device_s": 1.5, "code_version": "0.1.0", "checkpoint": f"/ckpt/{trial}"}
        for step in (10, 20):
            rows.append({**base, "step": step, "fidelity": "text", "status": "finished" if step == 20 else "running",
                         "asr_text": rng.random(), "util_text": rng.random(), "util_text_color": rng.random(),
                         "spread_ratio": 0.5 + esp / 10, "jaccard": rng.random(), "loss": rng.random(),
                         # the default text objectives, with intervals: safety and utility trade off in esp
                         **_with_interval("matched_auc", 0.9 - esp / 10 + step / 1000),
                         **_with_interval("util_sib", 0.5 + esp / 10 - k / 1000)})
        rows.append({**base, "step": 20, "fidelity": "image", "status": "finished", "asr": rng.random() / 10,
                     "asr_sneaky": rng.random(), "tifa": 0.6 + rng.random() / 5, "tifa_color": rng.random()})
    # a pruned trial: its earlier running row must not enter ablation tables
    rows.append({"sweep_id": "quick-1", "trial_id": "pruned", "step": 10, "fidelity": "text", "status": "running",
                 "lambda_esp": 1.0, "local_k": 15, "lambda_lsa": 0.1, "alpha": 1, "lambda_safe": 0.3, "asr_text": 0.0})
    rows.append({"sweep_id": "quick-1", "trial_id": "pruned", "step": 20, "fidelity": "text", "status": "pruned",
                 "lambda_esp": 1.0, "local_k": 15, "lambda_lsa": 0.1, "alpha": 1, "lambda_safe": 0.3, "asr_text": 0.0})
    ResultStore(root / "results").write(rows)
    return root


def _with_interval(name: str, value: float) -> dict[str, float]:
    return {name: value, f"{name}_lo": value - 0.02, f"{name}_hi": value + 0.03}


def _sage(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


REFUSED = {
    "copy": "COPY (SELECT * FROM results) TO '{tmp}/out.csv'",
    "attach": "ATTACH '{tmp}/x.duckdb' AS x",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "pragma": "PRAGMA threads=1",
    "set": "SET threads = 1",
    "create": "CREATE TABLE t AS SELECT 1",
    "insert": "INSERT INTO results VALUES (1)",
    "update": "UPDATE results SET step = 0",
    "delete": "DELETE FROM results",
    "export": "EXPORT DATABASE '{tmp}/dump'",
    "multiple": "SELECT 1; SELECT 2",
    "select-then-copy": "SELECT 1; COPY (SELECT 1) TO '{tmp}/y.csv'",
    "call": "CALL pragma_version()",
    "drop": "DROP VIEW results",
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_sql_refuses_non_read_statements(kind: str, sweep_dir: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _sage(capsys, "sql", str(sweep_dir), REFUSED[kind].format(tmp=tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert "read-only" in err or "one statement" in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_sql_runs_selects_and_with(sweep_dir: Path, capsys) -> None:
    code, out, _ = _sage(capsys, "sql", str(sweep_dir), "--format", "csv",
                         "WITH t AS (SELECT DISTINCT trial_id FROM results) SELECT count(*) AS n FROM t")
    assert code == 0 and out.splitlines() == ["n", "9"]
    df = analysis.readonly_query(sweep_dir, "SELECT method, asr FROM reported WHERE source = 'reported' ORDER BY asr")
    assert df["method"].iloc[0] == "AdvUnlearn" and len(df) == 10


def test_pareto_cli_prints_front_and_writes_plot(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    plot = tmp_path / "front.png"
    code, out, err = _sage(capsys, "pareto", str(sweep_dir), "--x", "asr_text", "--y", "util_text",
                           "--plot", str(plot))
    assert code == 0, err
    front = analysis.pareto_front(sweep_dir, x="asr_text", y="util_text")
    for trial in front["trial_id"]:
        assert trial in out
    assert "hypervolume" in out and plot.stat().st_size > 5000 and plot.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = _sage(capsys, "pareto", str(sweep_dir / "results"), "--by", "method")
    assert code == 0 and "des" in out and "sage" in out  # image level by default: asr vs tifa
    code, _, err = _sage(capsys, "pareto", str(sweep_dir), "--x", "asr_txt")
    assert code == 2 and "did you mean 'asr_text'" in err


def test_ablation_layout_defaults_and_statuses(sweep_dir: Path, capsys) -> None:
    df = analysis.ablation_table(sweep_dir, param="lambda_esp", fmt=None, all_columns=True)
    assert list(df["lambda_esp"]) == [0.0, 0.5, 1.0, 2.0, 4.0]  # local_k != 15 trials left out
    assert list(df["n"]) == [1, 1, 1, 1, 1]  # the pruned trial is not counted
    cols = list(df.columns)
    # headline first (image objectives, geometry diagnostics), then the rest in the appendix order
    order = ["asr", "tifa", "matched_auc", "util_sib", "spread_ratio", "jaccard", "asr_sneaky", "asr_text",
             "tifa_color", "util_text", "util_text_color", "loss"]
    assert [c for c in cols if c in order] == order
    # image metrics come from the image row, text ones from the last text step of the same trial
    assert df.loc[df["lambda_esp"] == 4.0, "spread_ratio"].item() == pytest.approx(0.9)
    code, out, _ = _sage(capsys, "ablation", str(sweep_dir), "--param", "local_k", "--format", "csv")
    assert code == 0 and out.splitlines()[0] == ("local_k,n,method,asr,tifa,matched_auc,matched_auc_lo,matched_auc_hi,"
                                                 "util_sib,util_sib_lo,util_sib_hi,spread_ratio,jaccard")
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["5", "10", "15", "20"]
    code, out, _ = _sage(capsys, "ablation", str(sweep_dir), "--param", "local_k")
    assert code == 0 and out.startswith("| local_k | n | method |") and "lambda_esp = 2" in out
    with pytest.raises(QueryError, match="no trials have lambda_esp at its default 3"):
        analysis.ablation_table(sweep_dir, param="local_k", defaults={"lambda_esp": 3.0})
    code, _, err = _sage(capsys, "ablation", str(sweep_dir), "--param", "lamda_esp")
    assert code == 2 and "did you mean 'lambda_esp'" in err


def test_report_renders_plots_and_tables(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _sage(capsys, "report", str(sweep_dir), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    page = (tmp_path / "rep" / "index.html").read_text()
    for image in ("pareto_image.png", "pareto_text.png", "ablation_lambda_esp.png", "ablation_local_k.png"):
        assert f'src="{image}"' in page and (tmp_path / "rep" / image).stat().st_size > 5000
    assert "Ablation: lambda_esp" in page and "/ckpt/t00" in page  # best trials with checkpoints
    assert "pruned" in page and "finished" in page  # status counts
    assert "<table" in page and "reported" in page


def test_analysis_never_imports_torch_ray_or_sage_core_beyond_its_definitions(sweep_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                shared = name == "sage_core" or name.startswith("sage_core.defs")
                if name.split(".")[0] in ("torch", "ray", "sweeps", "sage_core") and not shared:
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import analysis
        from analysis import plots, report  # noqa: F401
        front = analysis.pareto_front({str(sweep_dir)!r}, x="asr_text", y="util_text")
        assert len(front) >= 1
        print(analysis.readonly_query({str(sweep_dir)!r}, "SELECT count(*) AS n FROM results")["n"][0])
        assert not any(m.split(".")[0] in ("torch", "ray", "sweeps") for m in sys.modules)
        assert all(m == "sage_core" or m.startswith("sage_core.defs") for m in sys.modules if m.startswith("sage_core"))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "26"
