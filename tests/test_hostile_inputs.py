"""Hostile and broken inputs through the real `sage` CLI: each is refused with exit code 2 and
exactly one line on stderr, no traceback, and no file outside the command's output changes.

The commands run in-process (``sweeps.cli.main``; a real subprocess where what Python prints
outside the CLI is checked); none of these cases starts Ray or loads a model: every refusal
happens before that, which is part of what is tested. Where the order matters, it is observed
through what the command would otherwise have done: a model that cannot load, a store with a
corrupt file, a query that would run for hours; the refusal that comes back names the earlier
check.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.store import ResultStore
from sweeps.cli import main

BOMB = "".join(
    [f"{c}: &{c} [{', '.join(['*' + p] * 9) if p else ', '.join(['x'] * 9)}]\n"
     for p, c in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg")]
)  # 9**7 = 4.8 million values once expanded


def _rows(sweep: str = "s1") -> list[dict]:
    return [{"sweep_id": sweep, "trial_id": f"t{i}", "step": 20, "fidelity": "text", "status": "finished",
             "method": "sage", "lambda_esp": float(i), "local_k": 15, "asr_text": 0.1 * i, "util_text": 1 - 0.1 * i}
            for i in range(4)]


def _write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _sweep_folder(root: Path, name: str, *, meta: object | None, spec_text: str | None = None) -> Path:
    from sweeps.spec import load_spec

    folder = root / name
    folder.mkdir()
    if spec_text is None:
        spec_text = load_spec("quickstart", storage=str(folder), check=False).to_yaml()
    (folder / "spec.yaml").write_text(spec_text, encoding="utf-8")
    if meta is not None:
        (folder / "sweep.json").write_text(meta if isinstance(meta, str) else json.dumps(meta), encoding="utf-8")
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input of the cases below, in one folder whose files must never change."""
    root = tmp_path_factory.mktemp("world")
    w: dict[str, Path] = {"root": root}
    # results stores
    w["store"] = root / "store"
    ResultStore(w["store"]).write(_rows())
    w["typed"] = root / "typed"
    ResultStore(w["typed"]).write(_rows())
    pq.write_table(pa.table({"trial_id": ["x"], "step": ["twenty"], "fidelity": ["text"], "asr_text": ["high"]}),
                   w["typed"] / "sweep_id=s1" / "part-99999999999999999999-text.parquet")
    w["corrupt"] = root / "corrupt"
    ResultStore(w["corrupt"]).write(_rows())
    (w["corrupt"] / "sweep_id=s1" / "part-99999999999999999999-bad.parquet").write_bytes(b"PAR1 not parquet")
    outside = root / "outside"
    ResultStore(outside).write(_rows("s9"))
    w["linkfile"] = root / "linkfile"
    ResultStore(w["linkfile"]).write(_rows())
    target = next((outside / "sweep_id=s9").glob("*.parquet"))
    os.symlink(target, w["linkfile"] / "sweep_id=s1" / "part-99999999999999999999-link.parquet")
    w["linkdir"] = root / "linkdir"
    ResultStore(w["linkdir"]).write(_rows())
    os.symlink(outside / "sweep_id=s9", w["linkdir"] / "sweep_id=s9")
    # plain files and folders
    w["afile"] = root / "afile.txt"
    w["afile"].write_text("not a folder\n")
    w["adir"] = root / "adir"
    w["adir"].mkdir()
    # config files
    cfg = root / "configs"
    cfg.mkdir()
    for name, body in {"bomb": BOMB + "lr: *g\n", "inf": "lr: .inf\n", "nan": "lambda_esp: .nan\n",
                       "bool": "epochs: true\n", "dup": "lr: 1.0e-5\nlr: 2.0e-5\n", "intkey": "1: 2\n",
                       "recursive": "lr: &a [*a]\n"}.items():
        (cfg / f"{name}.yaml").write_text(body, encoding="utf-8")
    (cfg / "latin1.yaml").write_bytes("concept: 'nudit\xe9'\n".encode("latin-1"))
    w["configs"] = cfg
    # checkpoints (no model: every refusal comes before one would load)
    ck = root / "ckpt"
    for name, meta in {"list": "[]", "textstep": json.dumps({"step": "ten", "config": {}}),
                       "boolstep": json.dumps({"step": True, "config": {}}), "truncated": json.dumps({"step": 2})}.items():
        (ck / name / "text_encoder").mkdir(parents=True)
        (ck / name / "meta.json").write_text(meta, encoding="utf-8")
    import torch
    from safetensors.torch import save_file

    weights = ck / "truncated" / "text_encoder" / "model.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(weights))
    weights.write_bytes(weights.read_bytes()[:-100])
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle that must never be loaded")
    w["ckpt"], w["pickled"] = ck, pickled
    # sweep specs
    specs = root / "specs"
    specs.mkdir()
    _write_spec(specs / "escape.yaml", "include: ../../../../../../../../etc/passwd\nname: escape\n")
    _write_spec(specs / "absolute.yaml", f"include: {outside / 'x.yaml'}\nname: absolute\n")
    (outside / "x.yaml").write_text("name: x\n")
    _write_spec(specs / "bomb.yaml", "include: quickstart\n" + BOMB + "description: *g\n")
    _write_spec(specs / "negrung.yaml", "include: quickstart\nfidelity: {text_every: 20, rungs: [-20, 0]}\n")
    _write_spec(specs / "epochrung.yaml", "include: quickstart\ntrain: {max_steps: null, epochs: 1, max_pairs: 64}\n"
                "fidelity: {text_every: 2, rungs: [2, 8]}\n")
    huge = {f: list(range(1, 11)) for f in ("lambda_esp", "lambda_lsa", "alpha", "lambda_safe", "weight_decay", "lr",
                                            "adam_eps", "concept_guidance_ratio", "local_k", "seed", "epochs",
                                            "batch_size", "diag_k", "diag_samples", "max_steps", "keep_checkpoints")}
    _write_spec(specs / "huge.yaml", "include: quickstart\nspace:\n" + "".join(
        f"  {k}: {{grid: {v}}}\n" for k, v in huge.items()))
    _write_spec(specs / "halfbad.yaml", "include: quickstart\nspace:\n  local_k: {grid: [3, 40]}\n"
                f"  lambda_esp: {{grid: {[round(i * 0.1, 1) for i in range(41)]}}}\n"
                f"  lambda_lsa: {{grid: {[round(0.01 * (i + 1), 2) for i in range(100)]}}}\n")
    _write_spec(specs / "boolepochs.yaml", "include: quickstart\ntrain: {epochs: true}\n")
    _write_spec(specs / "inftext.yaml", "include: quickstart\nresources: {cpus: .inf}\n")
    _write_spec(specs / "emptystorage.yaml", "include: quickstart\nstorage: ''\n")
    _write_spec(specs / "textevalinf.yaml", "include: quickstart\ntrain: {text_eval: {probe_l2: .inf}}\n")
    _write_spec(specs / "guidanceinf.yaml", "include: quickstart\n"
                "fidelity: {text_every: 20, image: {metrics: [asr], eval: {guidance_scale: .inf}}}\n")
    _write_spec(specs / "uniforminf.yaml", "include: quickstart\nspace: {lambda_esp: {uniform: [0, .inf]}}\n")
    _write_spec(specs / "robustnan.yaml", "include: quickstart\nfidelity: {text_every: 20, robust: {lr: .nan}}\n")
    _write_spec(specs / "proximalinf.yaml", "include: quickstart\n"
                "fidelity: {text_every: 20, proximal: {alpha_safety: .inf}}\n")
    _write_spec(specs / "seedhuge.yaml", "include: quickstart\nsearch: {seed: 99999999999999999999}\n")
    w["specs"] = specs
    # a model folder that cannot load (no weights): a refusal naming anything else came first
    w["unloadable"] = root / "unloadable"
    w["unloadable"].mkdir()
    (w["unloadable"] / "config.json").write_text(json.dumps({"model_type": "bert"}))
    # sweep folders
    sweeps_dir = root / "sweeps"
    sweeps_dir.mkdir()
    ok_meta = {"sweep_id": "quickstart-1", "state": "interrupted"}
    w["sw_trunc"] = _sweep_folder(sweeps_dir, "trunc", meta='{"sweep_id": "quickstart-1", "sta')
    w["sw_list"] = _sweep_folder(sweeps_dir, "list", meta="[]")
    w["sw_noid"] = _sweep_folder(sweeps_dir, "noid", meta={"state": "running"})
    w["sw_badstate"] = _sweep_folder(sweeps_dir, "badstate", meta={"sweep_id": "q-1", "state": "sleeping"})
    w["sw_spec"] = _sweep_folder(sweeps_dir, "spec", meta=ok_meta, spec_text="name: quickstart\nstorage: x\n")
    w["sw_specbomb"] = _sweep_folder(sweeps_dir, "specbomb", meta=ok_meta, spec_text=BOMB + "name: *g\n")
    w["sw_sched"] = _sweep_folder(sweeps_dir, "sched", meta=ok_meta)
    (w["sw_sched"] / "scheduler_state.json").write_text('{"recorded": {"20": {"t0": [0.1, "x"]}}, "pruned": {}}')
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    w["sw_dead"] = _sweep_folder(sweeps_dir, "dead", meta={"sweep_id": "q-1", "state": "running",
                                                          "driver_pid": _dead_pid(), "started": started})
    w["sw_badstore"] = _sweep_folder(sweeps_dir, "badstore", meta=ok_meta)
    ResultStore(w["sw_badstore"] / "results").write(_rows("quickstart-1"))
    (w["sw_badstore"] / "results" / "sweep_id=quickstart-1" / "part-99999999999999999999-bad.parquet").write_bytes(
        b"PAR1 not parquet")
    return w


def _snapshot(root: Path, *, skip: Path | None) -> dict[str, str]:
    """sha256 of every file under ``root`` (links by their target path), except under ``skip``."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            if skip is not None and (path == skip or skip in path.parents):
                continue
            if path.is_symlink():
                out[str(path)] = "link:" + os.readlink(path)
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def refuse(capsys: pytest.CaptureFixture[str], argv: list[str], *, watch: list[Path],
           out: Path | None = None) -> str:
    """Run `sage ARGV`; assert exit 2, one stderr line, no traceback, nothing outside ``out`` changed."""
    before = [_snapshot(root, skip=out) for root in watch]
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert [_snapshot(root, skip=out) for root in watch] == before
    return lines[0]


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
    store.write(_rows())
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
        folder = _sweep_folder(tmp_path, "live", meta={"sweep_id": "q-1", "state": "running",
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
    assert "4 result rows" in proc.stdout  # _rows() writes 4


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
