"""Earlier sweep folders for the warm-start tests, written with the runner's own row function
(``store_callback.result_row``) and the real results store, and the new specs that warm-start from them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_sweep_run import tiny_spec

EARLIER_ID = "tiny-earlier-1"
GRADED = [{"metric": "concept_auc", "mode": "min"}, {"metric": "util_sib", "mode": "max"}]


def earlier_values(i: int, step: int) -> dict[str, float]:
    """Objective values of earlier trial ``i`` at ``step`` (any numbers the loader must carry through)."""
    return {"asr_text": round(0.5 - 0.05 * i - 0.01 * step, 6), "util_text": round(0.6 + 0.03 * i + 0.02 * step, 6)}


#: Earlier trials: params, steps reported, status of the last row.
EARLIER = [
    ({"lambda_esp": 0.0, "lambda_lsa": 0.0, "lr": 1e-3}, (2, 4), "finished"),
    ({"lambda_esp": 2.0, "lambda_lsa": 0.1, "lr": 1e-3}, (2,), "pruned"),
    ({"lambda_esp": 2.0, "lambda_lsa": 0.0, "lr": 1e-3}, (2, 4), "finished"),
    ({"lambda_esp": 8.0, "lambda_lsa": 0.0, "lr": 1e-3}, (2, 4), "finished"),   # outside the new space
    ({"lambda_esp": 0.0, "lambda_lsa": 0.1, "lr": 1e-4}, (2, 4), "finished"),   # another fixed lr
    ({"lambda_esp": 0.0, "lambda_lsa": 0.1, "lr": 1e-3}, (2,), "failed"),
]


def earlier_folder(root: Path, trials=EARLIER, *, unwritten: dict | None = None, values=earlier_values,
                   **changes) -> Path:
    """An earlier sweep's folder as the runner leaves it: spec.yaml, sweep.json, result rows.
    ``unwritten``: column -> ``"absent"`` / ``"null"``, a setting older code did not store (absent from
    its rows, or null there because a later file of the same sweep added the column); ``values``:
    ``(i, step) -> objective values`` of trial ``i`` (default :func:`earlier_values`)."""
    from analysis.store import ResultStore
    from sweeps.resolved_trial import resolve_trial
    from sweeps.spec import base_train_config, load_spec
    from sweeps.store_callback import result_row
    from sweeps.sweep_dir import SweepDir

    space = {"lambda_esp": {"grid": [0.0, 2.0, 8.0]}, "lambda_lsa": {"grid": [0.0, 0.1]}, "lr": {"grid": [1e-3, 1e-4]}}
    path = tiny_spec(root, storage=str(root / "earlier"), space=space, **changes)
    spec = load_spec(path)
    folder = SweepDir.at(spec.storage)
    Path(folder.root).mkdir()
    folder.write_spec(spec.to_yaml())
    Path(folder.meta_file).write_text(json.dumps({"sweep_id": EARLIER_ID, "name": "tiny", "state": "finished"}))
    base, rows = base_train_config(spec), []
    for i, (params, steps, status) in enumerate(trials):
        trial = resolve_trial(f"e{i}", params, base=base, variants={})
        for step in steps:
            # the trainer reports the guidance scale it derived from concept_guidance_ratio (the spec's None)
            result = {"step": step, "concept_guidance_scale": 18.1 + i, **values(i, step)}
            rows.append(result_row(sweep_id=EARLIER_ID, trial=trial, result=result,
                                   status=status if step == steps[-1] else "running", code_version="test"))
    for column, how in (unwritten or {}).items():
        for row in rows:
            del row[column]
            if how == "null":
                row[column] = None
    ResultStore(folder.results).write(rows)
    path.rename(root / "earlier.yaml")
    return Path(folder.root)


def new_spec(root: Path, name: str = "new.yaml", **changes) -> Path:
    changes.setdefault("space", {"lambda_esp": {"grid": [0.0, 2.0, 4.0]}, "lambda_lsa": {"grid": [0.0, 0.1]}})
    path = tiny_spec(root, storage=str(root / "new"), **changes)
    return path.rename(root / name)
