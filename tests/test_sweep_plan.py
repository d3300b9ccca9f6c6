"""One plan per sweep: the driver builds each trial's TrainConfig once, and what a sweep stores did
not change when the plan came in.

The store pin (``tests/pins/tiny_sweep_store.json``) was recorded from a real two-trial sweep on the
tiny CLIP before the plan existed: column names, per-row hyperparameters, steps and statuses, and
the schema's roles (paths under the test folder written as ``<root>``). Float metrics are not
pinned; their names are.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from sage_core.defs.config import load_config
from tests.test_resolved_trial import constructions  # noqa: F401 - a fixture: TrainConfig objects built
from tests.test_sweep_run import _rows, ray_local, tiny_spec  # noqa: F401 - ray_local is a fixture

PIN = Path(__file__).parent / "pins" / "tiny_sweep_store.json"


def _normalized(value: Any, root: Path) -> Any:
    return value.replace(str(root), "<root>") if isinstance(value, str) else value


def store_pin(storage: Path, root: Path) -> dict[str, Any]:
    """What a sweep's store and schema hold that the maths and the spec determine."""
    rows = _rows(storage)
    schema = json.loads((storage / "schema.json").read_text())
    # concept_guidance_scale: the trainer calibrates it on the base encoder (a float measured here)
    hyper = [h for h in schema["hyperparameters"] if h != "concept_guidance_scale"]
    ordered = sorted(rows, key=lambda r: (r["lambda_esp"], r["step"]))
    return {
        "trials": len({r["trial_id"] for r in rows}),
        "columns": sorted(rows[0]),
        "rows": [{k: _normalized(r[k], root) for k in ("step", "total_steps", "status", "fidelity", *hyper)}
                 for r in ordered],
        "schema": {k: _normalized(v, root) if k != "defaults" else {d: _normalized(x, root) for d, x in v.items()}
                   for k, v in schema.items() if k != "sweep_id"},
    }


def _two_trial_spec(root: Path) -> Path:
    return tiny_spec(root, train={"cache_dir": str(root / "cache")},
                     space={"lambda_esp": {"grid": [0.0, 2.0]}})


@pytest.mark.slow
def test_a_tiny_sweep_stores_the_pinned_rows(ray_local, tmp_path, constructions):  # noqa: F811 - fixtures
    import sweeps

    outcome = sweeps.run(str(_two_trial_spec(tmp_path)), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 2
    # The driver (this process; trials train in Ray's workers) built one TrainConfig per trial:
    # validation's plan, which base preparation, the schema and the store's resolver then read.
    assert constructions["n"] == 2
    got = store_pin(tmp_path / "sweep", tmp_path)
    if os.environ.get("SAGE_RECORD_PINS") == "1":  # recorded once, before the SweepPlan change
        PIN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(PIN.read_text())
    # independent of the pin: one row per (trial, text evaluation), the two grid values, finished at 4
    assert got["trials"] == 2 and [(r["lambda_esp"], r["step"]) for r in got["rows"]] == [
        (0.0, 2), (0.0, 4), (2.0, 2), (2.0, 4)]
    assert [r["status"] for r in got["rows"]] == ["running", "finished"] * 2


# quickstart (lambda_esp {0, 2} x lambda_lsa {0, 0.1}) crossed with two variants that differ in
# max_length, one of the fields the base data depends on: 8 trials, 2 distinct base-data keys.
VARIANTS = {"short": {"max_length": 24}, "long": {"max_length": 32}}


def _quickstart_with_variants(tmp_path: Path) -> Path:
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"include": "quickstart", "name": "v", "variants": VARIANTS,
                                    "storage": str(tmp_path / "sweep")}))
    return path


def test_the_driver_builds_one_config_per_trial_for_every_part_that_reads_it(tmp_path, capsys,
                                                                             constructions):  # noqa: F811
    from ray.tune.experiment import Trial

    from sweeps.cli import main
    from sweeps.resolved_trial import TrialResolver
    from sweeps.schema_file import column_roles
    from sweeps.space import enumerate_combinations
    from sweeps.spec import load_spec
    from sweeps.sweep_plan import plan_of

    path = _quickstart_with_variants(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "validate", str(path)])
    assert exit_info.value.code in (0, None) and "validated all 8 configurations" in capsys.readouterr().out
    assert constructions["n"] == 8
    # what `sage sweep run` does next (its spec loaded again, the same): storage resolved, the plan
    # taken, bases prepared, schema written, trials resolved as Tune starts them
    spec = load_spec(path, check=False)
    plan = plan_of(spec.model_copy(update={"storage": str(tmp_path / "elsewhere")}))
    bases = plan.base_configs()
    roles = column_roles(spec, sweep_id="v-1", plan=plan)
    combos = list(enumerate_combinations(spec.dimensions()))
    trials = [Trial("train_trial", config=c, trial_id=f"t{i}", stub=True) for i, c in enumerate(combos)]
    resolver = TrialResolver(base=plan.base, variants=spec.variants, planned=plan.configs)
    got = [resolver(t) for t in trials]
    assert constructions["n"] == 8  # nothing was built again
    sampled = resolver(Trial("train_trial", config={**combos[0], "lambda_esp": 0.7}, trial_id="x", stub=True))
    assert constructions["n"] == 9  # a value the plan could not know: built when its trial starts
    # tuner.pkl holds the resolver without the plan: a restored driver resolves each trial again, once
    restored = pickle.loads(pickle.dumps(resolver))
    assert restored(trials[0]).columns == got[0].columns and restored(trials[0]) is restored(trials[0])
    assert constructions["n"] == 10
    # against configs built independently from the preset, the variant and the params
    preset = yaml.safe_load(Path("sage_core/presets/quickstart.yaml").read_text())
    for combo, trial in zip(combos, got, strict=True):
        want = load_config(preset="quickstart", overrides={
            **spec.train, **VARIANTS[combo["variant"]], "lambda_esp": combo["lambda_esp"],
            "lambda_lsa": combo["lambda_lsa"], "eval_every": spec.fidelity.text_every,
            "cache_dir": plan.base["cache_dir"]})
        assert trial.config == want and trial.columns["variant"] == combo["variant"]
        assert trial.columns["max_length"] == VARIANTS[combo["variant"]]["max_length"]
    assert sampled.config.lambda_esp == 0.7 and sampled.config.local_k == preset["local_k"]
    assert sorted(c.max_length for c in bases) == [24, 32]
    assert roles.varied == ("variant", "lambda_esp", "lambda_lsa") and "variant" in roles.hyperparameters


def test_a_sampled_plan_still_prepares_every_base(tmp_path, monkeypatch):
    import sweeps.sweep_plan as sweep_plan
    from sweeps.spec import load_spec

    spec = load_spec(_quickstart_with_variants(tmp_path), check=False)
    full = sweep_plan.build_plan(spec)
    monkeypatch.setattr(sweep_plan, "MAX_VALIDATED_COMBINATIONS", 1)
    sampled = sweep_plan.build_plan(spec)
    assert (sampled.coverage.sampled, len(sampled.trials), len(full.trials)) == (True, 1, 8)
    keys = {c.base_data_key() for c in full.base_configs()}
    assert len(keys) == 2 and {c.base_data_key() for c in sampled.base_configs()} == keys
