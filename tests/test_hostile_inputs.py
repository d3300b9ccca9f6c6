"""Hostile and broken inputs through the real `sage` CLI: each is refused with exit code 2 and
exactly one line on stderr, no traceback, and no file outside the command's output changes.

The commands run in-process (``sweeps.cli.main``); none of these cases starts Ray or loads a
model: every refusal happens before that, which is part of what is tested. Where the order matters, it is observed
through what the command would otherwise have done: a model that cannot load, a store with a
corrupt file, a query that would run for hours; the refusal that comes back names the earlier
check. The inputs are built by ``tests.hostile_world``; what the CLI keeps doing with damaged
inputs it accepts is in ``test_cli_input_guards.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.hostile_world import BOMB, build_world, refuse


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_world(tmp_path_factory.mktemp("world"))


Case = Callable[[dict[str, Path], Path], tuple[list[object], str]]

CASES: dict[str, Case] = {
    # --- sage sql: the sandbox ------------------------------------------------------------
    "sql-cte-copy-anywhere": lambda w, t: (
        ["sql", w["store"], f"WITH x AS (COPY (SELECT 1) TO '{t / 'any.csv'}') SELECT * FROM x"], "refused by the sandbox"),
    "sql-cte-copy-into-store": lambda w, t: (
        ["sql", w["store"], "WITH x AS (COPY (SELECT 't0' AS trial_id, 20 AS step, 'text' AS fidelity, 0.0 AS asr_text) "
         f"TO '{w['store'] / 'sweep_id=s1' / 'part-99999999999999999999-z.parquet'}') SELECT * FROM x"],
        "refused by the sandbox"),
    "sql-copy-overwrite-store-file": lambda w, t: (
        ["sql", w["store"], f"COPY (SELECT 1) TO '{next((w['store'] / 'sweep_id=s1').glob('*.parquet'))}' "
         "(FORMAT parquet, USE_TMP_FILE false)"], "read-only"),
    "sql-read-etc-passwd": lambda w, t: (["sql", w["store"], "SELECT * FROM read_text('/etc/passwd')"], "/etc/passwd"),
    "sql-read-csv-etc-passwd": lambda w, t: (
        ["sql", w["store"], "SELECT * FROM read_csv('/etc/passwd', sep=':')"], "refused by the sandbox"),
    "sql-read-store-files-directly": lambda w, t: (
        ["sql", w["store"], f"SELECT * FROM read_parquet('{w['store']}/*/*.parquet')"], "refused by the sandbox"),
    "sql-glob-filesystem": lambda w, t: (["sql", w["store"], "SELECT * FROM glob('/etc/*')"], "refused by the sandbox"),
    "sql-read-blob-in-cte": lambda w, t: (
        ["sql", w["store"], "WITH a AS (SELECT * FROM read_blob('/etc/hostname')) SELECT * FROM a"],
        "refused by the sandbox"),
    "sql-attach-file": lambda w, t: (["sql", w["store"], f"ATTACH '{t / 'x.db'}' AS x"], "read-only"),
    "sql-install-extension": lambda w, t: (["sql", w["store"], "INSTALL httpfs"], "read-only"),
    "sql-set-memory": lambda w, t: (["sql", w["store"], "SET memory_limit = '100GB'"], "read-only"),
    "sql-two-statements": lambda w, t: (["sql", w["store"], "SELECT 1; SELECT 2"], "one statement"),
    "sql-limit-negative": lambda w, t: (["sql", w["store"], "SELECT 1", "--limit", "-1"], "--limit -1"),
    "sql-limit-zero": lambda w, t: (["sql", w["store"], "SELECT 1", "--limit", "0"], "--limit 0"),
    "sql-limit-not-a-number": lambda w, t: (["sql", w["store"], "SELECT 1", "--limit", "many"], "--limit"),
    "sql-timeout-zero": lambda w, t: (["sql", w["store"], "SELECT 1", "--timeout", "0"], "timeout=0"),
    "sql-timeout-nan": lambda w, t: (["sql", w["store"], "SELECT 1", "--timeout", "nan"], "timeout=nan"),
    "sql-memory-not-a-size": lambda w, t: (["sql", w["store"], "SELECT 1", "--memory", "lots"], "memory='lots'"),
    "sql-threads-zero": lambda w, t: (["sql", w["store"], "SELECT 1", "--threads", "0"], "threads=0"),
    "sql-missing-store": lambda w, t: (["sql", t / "nowhere", "SELECT 1"], "does not exist"),
    # --- the store: bad files are named ---------------------------------------------------
    "store-wrong-column-types": lambda w, t: (
        ["sql", w["typed"], "SELECT count(*) FROM results"], "column 'step' holds string"),
    "store-symlinked-file-leaves-store": lambda w, t: (
        ["sql", w["linkfile"], "SELECT count(*) FROM results"], "a link that leaves the store"),
    "store-symlinked-partition-leaves-store": lambda w, t: (
        ["sql", w["linkdir"], "SELECT count(*) FROM results"], "a link that leaves the store"),
    "pareto-corrupt-file": lambda w, t: (["pareto", w["corrupt"]], "part-99999999999999999999-bad.parquet"),
    "pareto-wrong-column-types": lambda w, t: (["pareto", w["typed"]], "part-99999999999999999999-text.parquet"),
    "report-wrong-column-types": lambda w, t: (
        ["report", w["typed"], "--out", t / "report"], "part-99999999999999999999-text.parquet"),
    # --- output paths, checked before work ------------------------------------------------
    "pareto-plot-under-a-file": lambda w, t: (
        ["pareto", w["store"], "--plot", w["afile"] / "front.png"], "is a file, not a folder"),
    "pareto-plot-is-a-folder": lambda w, t: (["pareto", w["store"], "--plot", w["adir"]], "must end in"),
    "pareto-plot-unknown-format": lambda w, t: (["pareto", w["store"], "--plot", t / "front.txt"], "must end in"),
    "report-out-is-a-file": lambda w, t: (["report", w["store"], "--out", w["afile"]], "not a folder"),
    "train-out-is-a-file": lambda w, t: (
        ["train", "--preset", "quickstart", "--out", w["afile"]], "exists and is not a folder"),
    "eval-out-is-a-file": lambda w, t: (["eval", "minilm", "--out", w["afile"]], "exists and is not a folder"),
    # --- configs ----------------------------------------------------------------------------
    "config-alias-bomb": lambda w, t: (
        ["train", "--config", w["configs"] / "bomb.yaml", "--out", t / "o"], "aliases expand to more than"),
    "config-recursive-alias": lambda w, t: (
        ["train", "--config", w["configs"] / "recursive.yaml", "--out", t / "o"], "contains it"),
    "config-not-utf8": lambda w, t: (["train", "--config", w["configs"] / "latin1.yaml", "--out", t / "o"], "not UTF-8"),
    "config-inf": lambda w, t: (["train", "--config", w["configs"] / "inf.yaml", "--out", t / "o"], "lr=inf"),
    "config-nan": lambda w, t: (["train", "--config", w["configs"] / "nan.yaml", "--out", t / "o"], "lambda_esp=nan"),
    "config-bool-epochs": lambda w, t: (["train", "--config", w["configs"] / "bool.yaml", "--out", t / "o"], "epochs=True"),
    "config-repeated-key": lambda w, t: (["train", "--config", w["configs"] / "dup.yaml", "--out", t / "o"], "given twice"),
    "config-number-key": lambda w, t: (["train", "--config", w["configs"] / "intkey.yaml", "--out", t / "o"], "not text"),
    "config-is-a-folder": lambda w, t: (["train", "--config", w["adir"], "--out", t / "o"], "is a folder"),
    "set-bool-epochs": lambda w, t: (["train", "-p", "quickstart", "--set", "epochs=true", "--out", t / "o"], "epochs=True"),
    "set-empty-encoder": lambda w, t: (["train", "-p", "quickstart", "--set", "encoder=", "--out", t / "o"], "encoder=''"),
    "set-inf-lambda": lambda w, t: (["train", "-p", "quickstart", "--set", "lambda_lsa=.inf", "--out", t / "o"],
                                    "lambda_lsa=inf"),
    "set-alias-bomb": lambda w, t: (
        ["train", "-p", "quickstart", "--set", "lr=" + BOMB.replace("\n", ", ").join("{}"), "--out", t / "o"],
        "aliases expand"),
    # --- saved checkpoints ------------------------------------------------------------------
    "resume-meta-is-a-list": lambda w, t: (
        ["train", "-p", "quickstart", "--resume", w["ckpt"] / "list", "--out", t / "o"], "got list"),
    "resume-meta-step-text": lambda w, t: (
        ["train", "-p", "quickstart", "--resume", w["ckpt"] / "textstep", "--out", t / "o"], "step='ten'"),
    "resume-meta-step-bool": lambda w, t: (
        ["train", "-p", "quickstart", "--resume", w["ckpt"] / "boolstep", "--out", t / "o"], "step=True"),
    "resume-truncated-safetensors": lambda w, t: (
        ["train", "-p", "quickstart", "--resume", w["ckpt"] / "truncated", "--out", t / "o"], "model.safetensors"),
    "eval-meta-is-a-list": lambda w, t: (["eval", w["ckpt"] / "list", "--out", t / "o"], "got list"),
    "eval-meta-step-text": lambda w, t: (["eval", w["ckpt"] / "textstep", "--out", t / "o"], "step='ten'"),
    "eval-pickled-weights-only": lambda w, t: (["eval", w["pickled"], "--out", t / "o"], "pickled weights"),
    "eval-repeated-attack-name": lambda w, t: (
        ["eval", "minilm", "--attack", "a=sneaky", "--attack", "a=i2p-sexual", "--out", t / "o"], "given twice"),
    # --- sweep specs ------------------------------------------------------------------------
    "spec-include-escapes-folder": lambda w, t: (
        ["sweep", "validate", w["specs"] / "escape.yaml", "--storage", t / "s"], "outside the spec's folder"),
    "spec-include-absolute-elsewhere": lambda w, t: (
        ["sweep", "validate", w["specs"] / "absolute.yaml", "--storage", t / "s"], "outside the spec's folder"),
    "spec-alias-bomb-description": lambda w, t: (
        ["sweep", "validate", w["specs"] / "bomb.yaml", "--storage", t / "s"], "aliases expand"),
    "spec-rungs-not-positive": lambda w, t: (
        ["sweep", "validate", w["specs"] / "negrung.yaml", "--storage", t / "s"], "fidelity.rungs[0]=-20"),
    "spec-rung-beyond-epoch-run": lambda w, t: (
        ["sweep", "validate", w["specs"] / "epochrung.yaml", "--storage", t / "s"], "last rung 8 must be below the run length 4"),
    "spec-grid-too-large": lambda w, t: (
        ["sweep", "validate", w["specs"] / "huge.yaml", "--storage", t / "s"], "10,000,000,000,000,000 trials"),
    "spec-grid-half-invalid": lambda w, t: (
        ["sweep", "validate", w["specs"] / "halfbad.yaml", "--storage", t / "s"], "local_k=40 needs batch_size"),
    "spec-bool-epochs": lambda w, t: (
        ["sweep", "validate", w["specs"] / "boolepochs.yaml", "--storage", t / "s"], "epochs=True"),
    "spec-inf-resource": lambda w, t: (
        ["sweep", "validate", w["specs"] / "inftext.yaml", "--storage", t / "s"], "resources.cpus=inf"),
    "spec-empty-storage": lambda w, t: (["sweep", "validate", w["specs"] / "emptystorage.yaml"], "storage=''"),
    # --- sweep folders ----------------------------------------------------------------------
    "status-sweep-json-truncated": lambda w, t: (["sweep", "status", w["sw_trunc"]], "not valid JSON"),
    "status-sweep-json-list": lambda w, t: (["sweep", "status", w["sw_list"]], "got list"),
    "stop-sweep-json-no-id": lambda w, t: (["sweep", "stop", w["sw_noid"]], "sweep_id=None"),
    "status-sweep-json-bad-state": lambda w, t: (["sweep", "status", w["sw_badstate"]], "state='sleeping'"),
    "resume-incomplete-spec": lambda w, t: (["sweep", "resume", w["sw_spec"]], "objectives: required"),
    "status-spec-alias-bomb": lambda w, t: (["sweep", "status", w["sw_specbomb"]], "aliases expand"),
    "resume-damaged-scheduler-state": lambda w, t: (["sweep", "resume", w["sw_sched"]], "scheduler_state.json"),
    "stop-dead-driver": lambda w, t: (["sweep", "stop", w["sw_dead"]], "driver (pid"),
    "status-bad-store-file": lambda w, t: (["sweep", "status", w["sw_badstore"]], "(CLI: --skip-bad)"),
    # --- non-finite and out-of-range settings, wherever a number is accepted --------------------
    "eval-set-probe-l2-inf": lambda w, t: (
        ["eval", "minilm", "--set", "probe_l2=inf", "--out", t / "o"], "probe_l2='inf': Input should be a finite"),
    "eval-set-probe-l2-huge": lambda w, t: (
        ["eval", "minilm", "--set", "probe_l2=1e9", "--out", t / "o"], "less than or equal to 100"),
    "eval-set-guidance-inf": lambda w, t: (
        ["eval", "minilm", "--set", "guidance_scale=.inf", "--out", t / "o"], "guidance_scale=inf"),
    "eval-set-steps-beyond-schedule": lambda w, t: (
        ["eval", "minilm", "--set", "steps=5000", "--out", t / "o"], "steps=5000"),
    "eval-set-height-not-multiple-of-8": lambda w, t: (
        ["eval", "minilm", "--set", "height=500", "--out", t / "o"], "multiple of 8"),
    "eval-set-seed-beyond-64-bits": lambda w, t: (
        ["eval", "minilm", "--set", "seed=99999999999999999999", "--out", t / "o"], "4294967295"),
    "train-text-eval-inf-show-config": lambda w, t: (
        ["train", "-p", "quickstart", "--set", "text_eval={probe_l2: .inf}", "--show-config"],
        "text_eval.probe_l2=inf"),
    "train-seed-beyond-64-bits": lambda w, t: (
        ["train", "-p", "quickstart", "--set", "seed=99999999999999999999", "--out", t / "o"], "seed=9999"),
    "spec-text-eval-inf": lambda w, t: (  # named after the file given, not the spec it includes
        ["sweep", "validate", w["specs"] / "textevalinf.yaml", "--storage", t / "s"],
        "spec 'textevalinf.yaml': trial config (with lambda_esp=0.0, lambda_lsa=0.0): text_eval.probe_l2=inf"),
    "spec-image-guidance-inf": lambda w, t: (
        ["sweep", "validate", w["specs"] / "guidanceinf.yaml", "--storage", t / "s"],
        "fidelity.image.eval.guidance_scale=inf"),
    "spec-uniform-bound-inf": lambda w, t: (
        ["sweep", "validate", w["specs"] / "uniforminf.yaml", "--storage", t / "s"], "space.lambda_esp.uniform[1]=inf"),
    "spec-robust-lr-nan": lambda w, t: (
        ["sweep", "validate", w["specs"] / "robustnan.yaml", "--storage", t / "s"], "fidelity.robust.lr=nan"),
    "spec-proximal-weight-inf": lambda w, t: (
        ["sweep", "validate", w["specs"] / "proximalinf.yaml", "--storage", t / "s"],
        "fidelity.proximal.alpha_safety=inf"),
    "spec-search-seed-huge": lambda w, t: (
        ["sweep", "validate", w["specs"] / "seedhuge.yaml", "--storage", t / "s"], "search.seed=99999999999999999999"),
    # --- output folders that only look writable (as root, /proc passes os.access) ---------------
    # The corrupt store / the model that cannot load would be refused otherwise: the output check came first.
    "pareto-plot-under-proc": lambda w, t: (
        ["pareto", w["corrupt"], "--plot", PROC / "front.png"], f"--plot {PROC}/front.png: not writable"),
    "report-out-under-proc": lambda w, t: (
        ["report", w["corrupt"], "--out", PROC / "report"], f"--out {PROC}/report: not writable"),
    "train-out-under-proc": lambda w, t: (
        ["train", "-p", "quickstart", "--set", f"encoder={w['unloadable']}", "--out", PROC / "o"],
        f"--out {PROC}/o: not writable"),
    "train-default-preset-out-under-proc": lambda w, t: (  # the preset notice waits: one line
        ["train", "--out", PROC / "o"], f"--out {PROC}/o: not writable"),
    "eval-out-under-proc": lambda w, t: (["eval", w["unloadable"], "--out", PROC / "o"], f"--out {PROC}/o: not writable"),
    # --- a name longer than the file system allows ------------------------------------------------
    "pareto-plot-name-too-long": lambda w, t: (
        ["pareto", w["store"], "--plot", t / LONG / "front.png"], "is 300 bytes long; the file system allows at most"),
    "report-out-name-too-long": lambda w, t: (["report", w["store"], "--out", t / LONG / "r"], "is 300 bytes long"),
    "train-out-name-too-long": lambda w, t: (["train", "-p", "quickstart", "--out", t / LONG / "o"], "is 300 bytes long"),
    "train-config-name-too-long": lambda w, t: (["train", "--config", t / LONG, "--out", t / "o"], "is 300 bytes long"),
    "eval-out-name-too-long": lambda w, t: (["eval", "minilm", "--out", t / LONG / "o"], "is 300 bytes long"),
    "eval-target-name-too-long": lambda w, t: (["eval", t / LONG, "--out", t / "o"], "TARGET"),
    "sql-results-name-too-long": lambda w, t: (["sql", t / LONG, "SELECT 1"], "RESULTS"),
    "spec-file-name-too-long": lambda w, t: (["sweep", "validate", t / (LONG + ".yaml")], "SPEC"),
    "spec-storage-name-too-long": lambda w, t: (
        ["sweep", "validate", "quickstart", "--storage", t / LONG / "s"], "is 300 bytes long"),
    "status-folder-name-too-long": lambda w, t: (["sweep", "status", t / LONG], "STORAGE"),
    # --- messages that say what happened -------------------------------------------------------
    "sql-comment-only": lambda w, t: (["sql", w["store"], "/* SELECT 1 */"], "the query holds no statement"),
    "sql-expression-too-deep": lambda w, t: (
        ["sql", w["store"], "SELECT " + "(" * 1100 + "1" + ")" * 1100], "deeper than DuckDB's limit"),
    "sql-install-is-install": lambda w, t: (["sql", w["store"], "FORCE INSTALL httpfs"], "refused an INSTALL statement"),
    "sql-insert-article": lambda w, t: (
        ["sql", w["store"], "INSERT INTO results VALUES (1)"], "refused an INSERT statement"),
}

LONG = "a" * 300  # one name; Linux file systems allow 255 bytes
PROC = Path("/proc/sage-hostile-no-such-folder")
#: Advice a line must not give: a setting the locked sandbox refuses, or a plural for no statement.
MISLEADING = {"sql-expression-too-deep": "SET ", "sql-comment-only": "extra"}


def test_at_least_eighty_hostile_cases() -> None:
    assert len(CASES) >= 80


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused_in_one_line(name: str, world: dict[str, Path], tmp_path: Path, capsys) -> None:
    argv, expected = CASES[name](world, tmp_path)
    out = next((Path(str(argv[i + 1])) for i, a in enumerate(argv) if a in ("--out", "--storage") and i + 1 < len(argv)),
               None)
    line = refuse(capsys, argv, watch=[world["root"], tmp_path], out=out)
    assert expected in line, line
    assert name not in MISLEADING or MISLEADING[name] not in line, line
    if out is not None and out.parent == tmp_path:
        assert not out.exists(), f"{out} was created although the command was refused"
    assert not (tmp_path / "any.csv").exists()


def test_cross_join_is_interrupted_by_its_timeout(world: dict[str, Path], tmp_path: Path, capsys) -> None:
    """10**18 rows: the query cannot end by itself. This line is written only when the timer of
    ``run_bounded`` fired and interrupted DuckDB, so it shows the query was stopped, not run to
    completion, without measuring a time a loaded machine could stretch."""
    line = refuse(capsys, ["sql", world["store"], "SELECT count(*) FROM range(1000000000) a, range(1000000000) b",
                           "--timeout", "2"], watch=[world["root"], tmp_path])
    assert line == "error: query stopped after its timeout of 2 s; narrow it or raise --timeout"
