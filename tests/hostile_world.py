"""The inputs of the hostile-input tests (``build_world``: stores, configs, checkpoints, sweep specs
and sweep folders, each broken in one way) and ``refuse``: run `sage` and check that it refused in
one line with exit code 2 and changed no file outside the command's output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.store import ResultStore
from sweeps.cli import main

BOMB = "".join(
    [f"{c}: &{c} [{', '.join(['*' + p] * 9) if p else ', '.join(['x'] * 9)}]\n"
     for p, c in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg")]
)  # 9**7 = 4.8 million values once expanded


def rows(sweep: str = "s1") -> list[dict]:
    return [{"sweep_id": sweep, "trial_id": f"t{i}", "step": 20, "fidelity": "text", "status": "finished",
             "method": "sage", "lambda_esp": float(i), "local_k": 15, "asr_text": 0.1 * i, "util_text": 1 - 0.1 * i}
            for i in range(4)]


def _write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sweep_folder(root: Path, name: str, *, meta: object | None, spec_text: str | None = None) -> Path:
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


def _stores(root: Path, w: dict[str, Path]) -> Path:
    """Results stores: a good one, one with a mistyped file, one with a corrupt file and two with a
    link that leaves the store (for a store ``outside``, which is returned)."""
    w["store"] = root / "store"
    ResultStore(w["store"]).write(rows())
    w["typed"] = root / "typed"
    ResultStore(w["typed"]).write(rows())
    pq.write_table(pa.table({"trial_id": ["x"], "step": ["twenty"], "fidelity": ["text"], "asr_text": ["high"]}),
                   w["typed"] / "sweep_id=s1" / "part-99999999999999999999-text.parquet")
    w["corrupt"] = root / "corrupt"
    ResultStore(w["corrupt"]).write(rows())
    (w["corrupt"] / "sweep_id=s1" / "part-99999999999999999999-bad.parquet").write_bytes(b"PAR1 not parquet")
    outside = root / "outside"
    ResultStore(outside).write(rows("s9"))
    w["linkfile"] = root / "linkfile"
    ResultStore(w["linkfile"]).write(rows())
    target = next((outside / "sweep_id=s9").glob("*.parquet"))
    os.symlink(target, w["linkfile"] / "sweep_id=s1" / "part-99999999999999999999-link.parquet")
    w["linkdir"] = root / "linkdir"
    ResultStore(w["linkdir"]).write(rows())
    os.symlink(outside / "sweep_id=s9", w["linkdir"] / "sweep_id=s9")
    return outside


def _configs(root: Path) -> Path:
    """Config files: an alias bomb, non-finite numbers, a bool for an int, a repeated key, a number
    key, a recursive alias, a file that is not UTF-8."""
    cfg = root / "configs"
    cfg.mkdir()
    for name, body in {"bomb": BOMB + "lr: *g\n", "inf": "lr: .inf\n", "nan": "lambda_esp: .nan\n",
                       "bool": "epochs: true\n", "dup": "lr: 1.0e-5\nlr: 2.0e-5\n", "intkey": "1: 2\n",
                       "recursive": "lr: &a [*a]\n"}.items():
        (cfg / f"{name}.yaml").write_text(body, encoding="utf-8")
    (cfg / "latin1.yaml").write_bytes("concept: 'nudit\xe9'\n".encode("latin-1"))
    return cfg


def _checkpoints(root: Path, w: dict[str, Path]) -> None:
    """Checkpoints with broken metadata or truncated weights (no model: every refusal comes before
    one would load), and a model folder holding only pickled weights."""
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


def _specs(root: Path, outside: Path) -> Path:
    """Sweep specs, each wrong in one way."""
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
    return specs


def _sweep_folders(root: Path, w: dict[str, Path]) -> None:
    """Sweep folders with damaged metadata, spec, scheduler state or store, and a dead driver."""
    sweeps_dir = root / "sweeps"
    sweeps_dir.mkdir()
    ok_meta = {"sweep_id": "quickstart-1", "state": "interrupted"}
    w["sw_trunc"] = sweep_folder(sweeps_dir, "trunc", meta='{"sweep_id": "quickstart-1", "sta')
    w["sw_list"] = sweep_folder(sweeps_dir, "list", meta="[]")
    w["sw_noid"] = sweep_folder(sweeps_dir, "noid", meta={"state": "running"})
    w["sw_badstate"] = sweep_folder(sweeps_dir, "badstate", meta={"sweep_id": "q-1", "state": "sleeping"})
    w["sw_spec"] = sweep_folder(sweeps_dir, "spec", meta=ok_meta, spec_text="name: quickstart\nstorage: x\n")
    w["sw_specbomb"] = sweep_folder(sweeps_dir, "specbomb", meta=ok_meta, spec_text=BOMB + "name: *g\n")
    w["sw_sched"] = sweep_folder(sweeps_dir, "sched", meta=ok_meta)
    (w["sw_sched"] / "scheduler_state.json").write_text('{"recorded": {"20": {"t0": [0.1, "x"]}}, "pruned": {}}')
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    w["sw_dead"] = sweep_folder(sweeps_dir, "dead", meta={"sweep_id": "q-1", "state": "running",
                                                          "driver_pid": _dead_pid(), "started": started})
    w["sw_badstore"] = sweep_folder(sweeps_dir, "badstore", meta=ok_meta)
    ResultStore(w["sw_badstore"] / "results").write(rows("quickstart-1"))
    (w["sw_badstore"] / "results" / "sweep_id=quickstart-1" / "part-99999999999999999999-bad.parquet").write_bytes(
        b"PAR1 not parquet")


def build_world(root: Path) -> dict[str, Path]:
    """Every input of the hostile-input cases, in ``root``, whose files must never change."""
    w: dict[str, Path] = {"root": root}
    outside = _stores(root, w)
    w["afile"] = root / "afile.txt"
    w["afile"].write_text("not a folder\n")
    w["adir"] = root / "adir"
    w["adir"].mkdir()
    w["configs"] = _configs(root)
    _checkpoints(root, w)
    w["specs"] = _specs(root, outside)
    # a model folder that cannot load (no weights): a refusal naming anything else came first
    w["unloadable"] = root / "unloadable"
    w["unloadable"].mkdir()
    (w["unloadable"] / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _sweep_folders(root, w)
    return w


def snapshot(root: Path, *, skip: Path | None) -> dict[str, str]:
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
    before = [snapshot(root, skip=out) for root in watch]
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert [snapshot(root, skip=out) for root in watch] == before
    return lines[0]
