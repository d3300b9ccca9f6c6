"""Sweep specs: every shipped spec validates; bad specs list every problem; includes; overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from sage_core.defs.errors import ConfigError
from sweeps.resolved_trial import trial_config
from sweeps.space import enumerate_combinations, parse_dimension
from sweeps.spec import SPECS_DIR, apply_overrides, base_train_config, describe, load_spec, shipped_specs


def _clip_encoder(name: str) -> dict:
    """Specs on the paper/des presets need a CLIP encoder (a Stable Diffusion folder): sd14-init stands in."""
    return {"encoder": "sd14-init"} if load_spec(name, check=False).preset in ("paper", "des") else {}


@pytest.mark.parametrize("name", shipped_specs())
def test_every_shipped_spec_validates(name, tmp_path):
    spec = load_spec(name, storage=str(tmp_path / "s"), overrides=_clip_encoder(name))
    assert spec.objectives and spec.fidelity.text_every >= 1
    assert "is valid" in describe(spec)
    assert not (tmp_path / "s").exists(), "validation must not leave the sweep folder behind"


def test_shipped_specs_cover_the_appendix_ablations():
    names = set(shipped_specs())
    assert {"quickstart", "paper-default", "des-baseline", "pareto-search", "ablation-components",
            "ablation-lambda-esp", "ablation-lambda-lsa", "ablation-local-k", "ablation-alpha",
            "ablation-lambda-safe"} <= names
    grids = {n: load_spec(n, check=False).dimensions() for n in names}
    assert grids["ablation-local-k"]["local_k"].grid == [5, 10, 15, 20, 30]
    assert grids["ablation-lambda-esp"]["lambda_esp"].grid == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert grids["ablation-lambda-lsa"]["lambda_lsa"].grid == [0.0, 0.05, 0.1, 0.2, 0.5]
    assert grids["ablation-alpha"]["alpha"].grid == [0.0, 0.5, 1.0, 2.0]
    assert grids["ablation-lambda-safe"]["lambda_safe"].grid == [0.1, 0.3, 0.5]
    assert grids["des-baseline"]["concept_guidance_scale"].grid == [200.0, 205.0]
    assert grids["ablation-components"]["variant"].grid == ["DES", "DES+ESP", "DES+LSA", "SAGE", "SAGE-alpha0"]


def test_ablation_inherits_the_paper_spec_and_lists_only_what_it_varies(tmp_path):
    text = (SPECS_DIR / "ablation-local-k.yaml").read_text()
    assert "include: paper-default" in text and "objectives" not in text
    spec = load_spec("ablation-local-k", storage=str(tmp_path), overrides=_clip_encoder("ablation-local-k"))
    paper = load_spec("paper-default", storage=str(tmp_path), overrides=_clip_encoder("paper-default"))
    assert spec.objectives == paper.objectives and spec.preset == "paper"
    # the image stage needs the user's model folders, so no shipped spec turns it on
    assert spec.fidelity.image is None and paper.fidelity.image is None
    # Each variant of the components ablation is a valid TrainConfig on top of the paper settings.
    comp = load_spec("ablation-components", storage=str(tmp_path), overrides=_clip_encoder("ablation-components"))
    base = base_train_config(comp)
    cfgs = {c["variant"]: trial_config(base, c, comp.variants) for c in enumerate_combinations(comp.dimensions())}
    assert cfgs["DES"].method == "des" and cfgs["DES"].lambda_esp == 0 and cfgs["SAGE"].lambda_esp == 2.0
    assert cfgs["SAGE-alpha0"].alpha == 0.0 and cfgs["DES+ESP"].lambda_lsa == 0.0


def _write(tmp_path, body: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_bad_spec_reports_every_problem_at_once(tmp_path):
    path = _write(tmp_path, {
        "include": "quickstart", "name": "bad",
        "space": {"lamda_esp": {"grid": [1.0]}, "local_k": {"grid": [5, 20]}, "alpha": {"uniform": [2, 1]},
                  "lr": {"normal": [0, 1]}},
        "objectives": [{"metric": "asr_txt", "mode": "min"}, {"metric": "tifa", "mode": "max"}],
        "storage": "/proc/no/such/place",
    })
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    text = "\n".join(err.value.problems)
    assert "space.lamda_esp" in text and "did you mean 'lambda_esp'" in text
    assert "low=2.0 must be <= high=1.0" in text
    assert "unknown kind 'normal'" in text and "loguniform" in text
    assert "'asr_txt'" in text and "did you mean 'asr_text'" in text
    assert "'tifa': an image-level metric" in text
    assert "local_k=20 needs batch_size >= local_k + 1" in text and "(with local_k=20" in text
    assert "storage='/proc/no/such/place'" in text


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    path = _write(tmp_path, {"include": "quickstart", "schedulr": {"kind": "fifo"}})
    with pytest.raises(ConfigError, match=r"unknown key 'schedulr' \(did you mean 'scheduler'\?\)"):
        load_spec(path)


def test_include_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_spec(tmp_path / "a.yaml")


def test_overrides_reach_spec_fields_and_train_fields(tmp_path):
    spec = load_spec("quickstart", overrides={"search.num_samples": 3, "lr": 1e-4, "max_failures": 0},
                     storage=str(tmp_path))
    assert spec.search.num_samples == 3 and spec.train["lr"] == 1e-4 and spec.max_failures == 0
    with pytest.raises(ConfigError, match="did you mean 'scheduler'"):
        apply_overrides({}, {"schedular.eta": 2})


def test_dimension_kinds():
    assert parse_dimension("x", {"int": [5, 30]}).bounds == (5, 30)
    with pytest.raises(ValueError, match="> 0 on a log scale"):
        parse_dimension("lr", {"loguniform": [0, 1]})
    combos = list(enumerate_combinations({"a": parse_dimension("a", {"grid": [1, 2]}),
                                          "b": parse_dimension("b", {"uniform": [0.0, 1.0]})}))
    assert combos == [{"a": 1, "b": 0.0}, {"a": 1, "b": 1.0}, {"a": 2, "b": 0.0}, {"a": 2, "b": 1.0}]


def test_cli_validate(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "sweeps", "sweep", "validate", "ablation-alpha",
                         "--storage", str(tmp_path), "--set", "encoder=sd14-init"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "4 trial(s)" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sweeps", "sweep", "validate", "quickstrt"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "did you mean 'quickstart'" in bad.stderr and "Traceback" not in bad.stderr


def test_include_takes_shipped_specs_and_files_under_the_spec_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("include: quickstart\ndescription: from base\n")
    (tmp_path / "sub" / "deeper.yaml").write_text("include: quickstart\ndescription: from sub\n")
    (tmp_path / "a.yaml").write_text("include: base.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("include: sub/deeper\nname: b\n")
    (tmp_path / "c.yaml").write_text("include: quickstart\nname: c\n")
    assert load_spec(tmp_path / "a.yaml", check=False).description == "from base"
    assert load_spec(tmp_path / "b.yaml", check=False).description == "from sub"
    assert load_spec(tmp_path / "c.yaml", check=False).objectives == load_spec("quickstart", check=False).objectives
    # a link inside the folder that points out of it is refused like the path itself
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("include: quickstart\n")
    (tmp_path / "link.yaml").symlink_to(outside)
    (tmp_path / "d.yaml").write_text("include: link.yaml\nname: d\n")
    with pytest.raises(ConfigError, match="outside the spec's folder"):
        load_spec(tmp_path / "d.yaml", check=False)


def test_validation_covers_every_combination_or_says_what_it_sampled(tmp_path, monkeypatch):
    import sweeps.sweep_plan as spec_module  # where validation reads the limit
    from sweeps.spec import validate_spec

    path = _write(tmp_path, {"include": "quickstart", "name": "cov", "storage": str(tmp_path / "s"),
                             "space": {"lambda_esp": {"grid": [0.0, 1.0, 2.0, 3.0]},
                                       "alpha": {"grid": [0.0, 0.5, 1.0, 1.5, 2.0]}}})
    spec = load_spec(path, check=False)
    full = validate_spec(spec)
    assert (full.checked, full.total, full.sampled) == (20, 20, False)
    assert "validated all 20 configurations" in describe(spec, full)
    monkeypatch.setattr(spec_module, "MAX_VALIDATED_COMBINATIONS", 7)
    part = validate_spec(spec)
    assert (part.checked, part.total, part.sampled) == (7, 20, True)
    assert "a seeded sample of 7 of its 20 configurations" in describe(spec, part)


def test_max_trials_refuses_a_large_sweep_with_its_count_and_can_be_raised(tmp_path):
    body = {"include": "quickstart", "name": "big", "storage": str(tmp_path / "s"),
            "space": {"lambda_esp": {"grid": [float(i) for i in range(30)]}}, "search": {"num_samples": 4}}
    with pytest.raises(ConfigError, match=r"has 120 trials \(grid points x num_samples\), above search.max_trials=100"):
        load_spec(_write(tmp_path, {**body, "search": {"num_samples": 4, "max_trials": 100}}))
    assert load_spec(_write(tmp_path, {**body, "search": {"num_samples": 4, "max_trials": 120}})).search.max_trials == 120


def test_rungs_are_checked_against_the_run_length_in_epochs(tmp_path):
    # 64 prompt pairs at batch 16: 4 steps per epoch, 2 epochs: the run is 8 steps long
    body = {"include": "quickstart", "name": "ep", "storage": str(tmp_path / "s"),
            "train": {"max_steps": None, "epochs": 2, "max_pairs": 64}}
    ok = load_spec(_write(tmp_path, {**body, "fidelity": {"text_every": 2, "rungs": [2, 6]}}))
    assert ok.fidelity.rungs == [2, 6]
    with pytest.raises(ConfigError, match=r"last rung 8 must be below the run length 8 steps \(epochs=2 x 4 steps"):
        load_spec(_write(tmp_path, {**body, "fidelity": {"text_every": 2, "rungs": [2, 8]}}))
