"""Warm starts: which earlier trials a new sweep may take (training settings, seeds, stage settings
must match; a setting older code did not store reads as today's default), and the one-line refusals
of a warm start from another experiment or from a folder that holds no earlier sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile_world import refuse
from tests.warm_start_folders import EARLIER, EARLIER_ID, GRADED, earlier_folder, new_spec


def test_validate_reads_the_earlier_sweep_too(tmp_path, capsys):
    from sweeps.cli import main

    earlier = earlier_folder(tmp_path)
    spec = new_spec(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["sweep", "validate", str(spec), "--set", f"search.warm_start={earlier}"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert f"warm start from {earlier} ({EARLIER_ID}): 3 earlier trial(s)" in out
    assert "grid: 2 configuration run(s) finished in the earlier sweep are reused, 4 to run" in out
    ehvi = new_spec(tmp_path, name="ehvi.yaml", search={"algorithm": "ehvi", "max_concurrent": 1})
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["sweep", "validate", str(ehvi), "--set", f"search.warm_start={earlier}"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "ehvi: 2 run(s) the earlier sweep finished with the same settings and training seed are reused, " \
           "4 to run" in out
    refused = new_spec(tmp_path, name="other.yaml", objectives=GRADED)
    capsys.readouterr()
    line = refuse(capsys, ["sweep", "validate", refused, "--set", f"search.warm_start={earlier}"], watch=[tmp_path])
    assert "ranked objectives" in line, line


#: Training settings the earlier trials and this spec hold differently, though no column says so at
#: first sight: this spec's None, a column older code did not write (read as today's default), a nested
#: setting only the earlier trials set. (earlier changes, this spec's changes, the drop reason)
HIDDEN = {
    "this spec's None": ({}, {"train": {"max_steps": None}},
                         "max_steps=4.0 where this spec trains with None"),
    "unwritten column, absent": ({"unwritten": {"lambda_adv": "absent"}}, {"train": {"lambda_adv": 0.5}},
                                 "lambda_adv=0.0 where this spec trains with 0.5"),
    "unwritten column, null": ({"unwritten": {"lambda_adv": "null"}}, {"train": {"lambda_adv": 0.5}},
                               "lambda_adv=0.0 where this spec trains with 0.5"),
    "nested setting": ({"train": {"lambda_adv": 0.5, "adv_attack": {"steps": 3}}}, {"train": {"lambda_adv": 0.5}},
                       "adv_attack.steps=3.0 where this spec leaves it unset"),
}


@pytest.mark.parametrize("case", sorted(HIDDEN))
def test_a_setting_the_earlier_trials_trained_with_differently_drops_them(tmp_path, case):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier_changes, new_changes, reason = HIDDEN[case]
    trials = EARLIER[:3]  # the three that the loader test keeps
    earlier = earlier_folder(tmp_path, trials, **earlier_changes)
    with pytest.raises(ConfigError) as refused:
        load_prior(str(earlier), load_spec(new_spec(tmp_path, **new_changes)))
    assert f"{reason} (3)" in str(refused.value), refused.value
    # The same earlier folder against a spec that trains as the earlier trials did keeps all three.
    same = {"train": earlier_changes["train"]} if "train" in earlier_changes else {}
    prior = load_prior(str(earlier), load_spec(new_spec(tmp_path, name="same.yaml", **same)))
    assert [t.params for t in prior.trials] == [{k: v for k, v in p.items() if k != "lr"} for p, _, _ in trials]
    assert prior.dropped == {}


def test_another_training_seed_informs_a_model_based_search_but_is_no_run_a_grid_can_reuse(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    earlier = earlier_folder(tmp_path, EARLIER[:3])  # trained with the tiny spec's seed, 0
    tpe = load_spec(new_spec(tmp_path, name="tpe.yaml", train={"seed": 1},
                              search={"algorithm": "tpe", "num_samples": 4, "seed": 3}))
    assert tpe.search.algorithm == "tpe" and [t.params["lambda_esp"] for t in load_prior(str(earlier), tpe).trials] \
        == [0.0, 2.0, 2.0]
    with pytest.raises(ConfigError, match=r"seed=0(\.0)? where this spec trains with 1 \(3\)"):
        load_prior(str(earlier), load_spec(new_spec(tmp_path, name="grid.yaml", train={"seed": 1})))


def test_objectives_of_the_robust_stage_need_the_same_robust_settings(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    robust = [{"metric": "robust_concept_auc", "mode": "min"}, {"metric": "util_text", "mode": "max"}]
    earlier = earlier_folder(tmp_path, objectives=robust, fidelity={"text_every": 2, "robust": {"steps": 3}})
    other = load_spec(new_spec(tmp_path, objectives=robust, fidelity={"text_every": 2, "robust": {"steps": 4}}))
    with pytest.raises(ConfigError) as refused:
        load_prior(str(earlier), other)
    assert "measured its robust objectives with fidelity.robust={'steps': 3}, this spec with " \
           "fidelity.robust={'steps': 4}" in str(refused.value), refused.value
    # the same settings written another way (the default lr spelled out) are the same settings
    same = load_spec(new_spec(tmp_path, name="same.yaml", objectives=robust,
                               fidelity={"text_every": 2, "robust": {"steps": 3, "lr": 1e-3}}))
    assert load_prior(str(earlier), same).sweep_id == EARLIER_ID


def test_objectives_of_the_attack_stage_need_the_same_attack_settings_wherever_it_runs(tmp_path):
    from sage_core.defs.errors import ConfigError
    from sweeps.spec import load_spec
    from sweeps.warm_start import load_prior

    attack = [{"metric": "attack_depth", "mode": "max"}, {"metric": "util_text", "mode": "max"}]
    earlier = earlier_folder(tmp_path, objectives=attack, fidelity={"text_every": 2, "attack": {"steps": 3}})
    other = load_spec(new_spec(tmp_path, objectives=attack, fidelity={"text_every": 2, "attack": {"steps": 4}}))
    with pytest.raises(ConfigError, match=r"measured its attack objectives with fidelity.attack=\{'steps': 3\}, "
                                          r"this spec with fidelity.attack=\{'steps': 4\}"):
        load_prior(str(earlier), other)
    # the same attack run at other evaluations (``at``) measures the same thing
    same = load_spec(new_spec(tmp_path, name="same.yaml", objectives=attack,
                               fidelity={"text_every": 2, "rungs": [2], "attack": {"steps": 3, "at": [2]}}))
    assert load_prior(str(earlier), same).sweep_id == EARLIER_ID


def _other_encoder(root: Path) -> dict:
    from tests.tiny_models import make_tiny_clip_encoder

    return {"train": {"encoder": str(make_tiny_clip_encoder(root / "enc2", seed=1))}}


MISMATCHES = {
    "encoder": (_other_encoder, "trained with encoder="),
    "prompt data": (lambda root: {"train": {"max_pairs": 16}},
                    "trained with max_pairs=None, this spec with max_pairs=16"),
    "text evaluation": (lambda root: {"train": {"text_eval": {"attack_samples": 8}}}, "trained with text_eval="),
    "objectives": (lambda root: {"objectives": GRADED},
                   "ranked objectives [asr_text (min), util_text (max)], this spec ranks [concept_auc (min), "
                   "util_sib (max)]"),
    "random search": (lambda root: {"search": {"algorithm": "random", "num_samples": 2}},
                      "search.warm_start with search.algorithm='random'"),
    "nothing fits": (lambda root: {"space": {"lambda_esp": {"grid": [5.0]}}}, "no trial of"),
    "all finished": (lambda root: {"space": {"lambda_esp": {"grid": [0.0]}, "lambda_lsa": {"grid": [0.0]}}},
                     "every configuration of this grid finished 1 time(s) in the earlier sweep"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_a_warm_start_from_another_experiment_is_refused_in_one_line_before_anything_is_written(
        tmp_path, capsys, case):
    earlier = earlier_folder(tmp_path)
    change, expected = MISMATCHES[case]
    spec = new_spec(tmp_path, **change(tmp_path))
    capsys.readouterr()  # what making the tiny models printed
    line = refuse(capsys, ["sweep", "run", spec, "--warm-start", earlier], watch=[tmp_path])
    assert expected in line, line
    assert not (tmp_path / "new").exists()


def test_warm_start_from_a_folder_that_holds_no_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    spec = new_spec(tmp_path)
    capsys.readouterr()
    line = refuse(capsys, ["sweep", "run", spec, "--warm-start", tmp_path / "empty"], watch=[tmp_path])
    assert line.startswith("error: ") and "search.warm_start" in line and "holds no sweep" in line, line
    line = refuse(capsys, ["sweep", "run", spec, "--warm-start", tmp_path / "missing"], watch=[tmp_path])
    assert "is not a folder" in line, line


@pytest.mark.parametrize("where", ["a file", "its own storage", "an unknown URI scheme", "a damaged store"])
def test_validate_refuses_a_warm_start_that_is_no_earlier_sweep_in_one_line(tmp_path, capsys, where):
    earlier = earlier_folder(tmp_path)
    spec = new_spec(tmp_path)
    argv, expected = {
        "a file": ([spec, "--warm-start", spec], "is not a folder"),
        "its own storage": ([spec, "--storage", earlier, "--warm-start", f"{earlier}/."], "this sweep's own storage"),
        "an unknown URI scheme": ([spec, "--warm-start", "nosuch://bucket/x"], "cannot be read (ArrowInvalid: "),
        "a damaged store": ([spec, "--warm-start", earlier], "cannot be read as a sweep folder: 1 bad file(s)"),
    }[where]
    if where == "a damaged store":
        next((earlier / "results").rglob("*.parquet")).write_bytes(b"not parquet")
    capsys.readouterr()
    line = refuse(capsys, ["sweep", "validate", *argv], watch=[tmp_path])
    assert line.startswith("error: search.warm_start: ") and expected in line, line
