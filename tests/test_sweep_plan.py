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
from pathlib import Path
from typing import Any

import pytest

from sage_core.defs.config import TrainConfig
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
def test_a_tiny_sweep_stores_the_pinned_rows(ray_local, tmp_path):  # noqa: F811 - the fixture
    import sweeps

    outcome = sweeps.run(str(_two_trial_spec(tmp_path)), progress=False)
    assert outcome.state == "finished" and outcome.counts["finished"] == 2
    got = store_pin(tmp_path / "sweep", tmp_path)
    if os.environ.get("SAGE_RECORD_PINS") == "1":  # recorded once, before the SweepPlan change
        PIN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(PIN.read_text())
    # independent of the pin: one row per (trial, text evaluation), the two grid values, finished at 4
    assert got["trials"] == 2 and [(r["lambda_esp"], r["step"]) for r in got["rows"]] == [
        (0.0, 2), (0.0, 4), (2.0, 2), (2.0, 4)]
    assert [r["status"] for r in got["rows"]] == ["running", "finished"] * 2
