"""The image stage of a sweep's fidelity plan: text metrics at the rungs, image metrics for survivors.

After Tune has finished every trial, the driver

1. reads each trial's final text row from the results store and ranks the finished trials by the
   spec's objectives: non-dominated rank, then crowding distance (NSGA-II order, by
   :mod:`analysis.dominance` as the Pareto scheduler ranks rungs); the first
   ``fidelity.image.survivors`` are the survivors (the text-level front first);
2. measures the base encoder once per sweep (``base_*`` columns; reused from an image row already
   written when the stage is resumed);
3. evaluates each survivor's aligned encoder (from the ``checkpoint`` of its final text row) with
   :class:`sage_core.evaluation.ImageEvaluator` inside a Ray task that asks for the trials'
   resources (cpus, gpus, custom), so on a cluster it runs on a GPU worker;
4. writes one row per survivor, ``fidelity="image"`` and the same ``(sweep_id, trial_id, step)`` as
   its final text row, through :class:`analysis.store.ResultStore`. The driver is the only writer
   and the store keeps one row per key, so a repeated or resumed stage never duplicates a row;
   survivors that already have an image row are skipped (``rerun=True`` evaluates them again,
   which the image cache under ``<cache>/images`` makes cheap).

5. ends with the calibration report (:mod:`analysis.calibration`): Kendall's tau and Spearman's rho,
   with bootstrap intervals, of each text proxy against its image metric over the trials with
   image rows, once with their final text rows (the same checkpoint) and once with their first
   rung rows (what the scheduler decided with). It replaces the sweep's ``calibration`` table in
   the store (``sage sql DIR "SELECT * FROM calibration"``, ``sage report``); the stage runs it
   whenever image rows exist, also when every survivor was evaluated before.

``sage sweep stop`` between survivors stops the stage (resumable); ``sage sweep resume`` after a
killed driver finishes it without rerunning any trial.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.calibration import calibration_display, calibration_table, write_calibration
from analysis.dominance import minimised_rows, objective_signs, ranks_and_crowding
from analysis.rows import last_rows
from sage_core.defs.config import TrainConfig
from sage_core.defs.errors import AnalysisError, StorageError
from sage_core.version import code_version

from .image_task import error_text, evaluate_encoder
from .spec import ImageStage, SweepSpec, base_train_config
from .sweep_dir import SweepDir

__all__ = ["Survivor", "StageResult", "final_text_rows", "select_survivors", "image_rows", "pending_survivors",
           "run_image_stage", "image_row", "first_rung", "evaluate_encoder"]

IMAGE = "image"
# Columns of a text row copied into the image row besides the TrainConfig fields (so fronts and
# ablation tables can group image rows by hyperparameter).
_CARRIED = ("variant", "total_steps")


@dataclass(frozen=True)
class Survivor:
    trial_id: str
    step: int
    checkpoint: str | None
    rank: int            # 0 = the text-level front
    crowding: float
    row: dict[str, Any] = field(repr=False, compare=False)

    def describe(self, metrics: Iterable[str]) -> str:
        vals = ", ".join(f"{m}={self.row.get(m):.4g}" for m in metrics if isinstance(self.row.get(m), (int, float)))
        return f"trial {self.trial_id} (step {self.step}, text front {self.rank + 1}; {vals})"


@dataclass
class StageResult:
    survivors: list[Survivor] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)     # trial ids written by this call
    already_done: list[str] = field(default_factory=list)  # trial ids that had an image row
    failed: dict[str, str] = field(default_factory=dict)   # trial id (or "base") -> reason
    generated: dict[str, int] = field(default_factory=dict)  # trial id / "base" -> images generated
    stopped: bool = False
    notes: list[str] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)  # analysis.calibration entries


# -- selection (pure: rows in, survivors out) ------------------------------------------------------
def final_text_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each trial's newest text row (largest step), by trial id (the rows of one sweep)."""
    return {trial_id: row for (_, trial_id, _), row in last_rows(rows, fidelity="text").items()}


def select_survivors(rows: Iterable[Mapping[str, Any]], *, metrics: list[str], modes: list[str],
                     survivors: int) -> list[Survivor]:
    """The ``survivors`` best finished trials by their final text rows: non-dominated rank first,
    then crowding distance within the rank (larger first), then trial id (deterministic)."""
    pool = [r for r in final_text_rows(rows).values() if r.get("status") == "finished"]
    pool = [r for r in pool if all(isinstance(r.get(m), (int, float)) and math.isfinite(r[m]) for m in metrics)]
    if not pool:
        return []
    pts = minimised_rows(pool, metrics=metrics, signs=objective_signs(metrics, modes))
    ranks, crowd = ranks_and_crowding(pts)
    order = sorted(range(len(pool)), key=lambda i: (int(ranks[i]), -crowd[i], str(pool[i]["trial_id"])))
    return [Survivor(trial_id=str(pool[i]["trial_id"]), step=int(pool[i]["step"]), checkpoint=pool[i].get("checkpoint"),
                     rank=int(ranks[i]), crowding=float(crowd[i]), row=pool[i]) for i in order[:survivors]]


def image_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished image rows by ``(trial_id, step)``."""
    return {(str(r["trial_id"]), int(r["step"])): dict(r) for r in rows
            if r.get("fidelity") == IMAGE and r.get("status") == "finished"}


def _folder(storage: str | SweepDir) -> SweepDir:
    return storage if isinstance(storage, SweepDir) else SweepDir.at(storage)


def pending_survivors(spec: SweepSpec, *, storage: str | SweepDir,
                      sweep_id: str) -> tuple[list[Survivor], list[Survivor]]:
    """(survivors still without an image row, all survivors)."""
    stage = spec.fidelity.image
    if stage is None:
        return [], []
    rows = _folder(storage).rows(sweep_id)
    chosen = select_survivors(rows, metrics=spec.objective_metrics(), modes=spec.objective_modes(),
                              survivors=stage.survivors)
    done = image_rows(rows)
    return [s for s in chosen if (s.trial_id, s.step) not in done], chosen


# -- rows ------------------------------------------------------------------------------------------
def image_row(survivor: Survivor, *, sweep_id: str, columns: Mapping[str, Any], base_encoder: str,
              wall_s: float, device_share: float, code_version: str) -> dict[str, Any]:
    """One ``fidelity="image"`` row: the survivor's hyperparameter columns (as in its text row), the
    image metrics, ``base_*`` and provenance (``columns``), timing."""
    row = {k: v for k, v in survivor.row.items()
           if v is not None and (k.split(".", 1)[0] in TrainConfig.model_fields or k in _CARRIED)}
    row.update({"sweep_id": sweep_id, "trial_id": survivor.trial_id, "step": survivor.step, "fidelity": IMAGE,
                "status": "finished", "checkpoint": survivor.checkpoint, "base_encoder": base_encoder,
                "code_version": code_version, "wall_s": float(wall_s), "device_s": float(wall_s) * device_share})
    row.update(columns)
    return row


def _base_from_rows(done: Mapping[tuple[str, int], Mapping[str, Any]], encoder: str) -> dict[str, float] | None:
    """``base_*`` metrics of an image row already written for this base encoder (a resumed stage)."""
    for row in done.values():
        if row.get("base_encoder") == encoder:
            base = {k[len("base_"):]: float(v) for k, v in row.items()
                    if k.startswith("base_") and k != "base_encoder" and isinstance(v, float)}
            if base:
                return base
    return None


# -- checkpoints --------------------------------------------------------------------------------------
def _find_checkpoint(folder: SweepDir, trial_id: str, step: int) -> str | None:
    """A trial's checkpoint of ``step`` in the Tune experiment folder (when its row lacks the path:
    the driver died between the result and the checkpoint registration)."""
    if folder.is_uri:
        return None
    for meta in sorted(Path(folder.experiment).glob(f"*{trial_id}*/checkpoint_*/meta.json")):
        try:
            if int(json.loads(meta.read_text(encoding="utf-8")).get("step", -1)) == step:
                return str(meta.parent)
        except (OSError, ValueError):
            continue
    return None


# -- the stage ---------------------------------------------------------------------------------------
def run_image_stage(spec: SweepSpec, *, storage: str | SweepDir, sweep_id: str, rerun: bool = False,
                    echo: Callable[[str], None] | None = None) -> StageResult:
    """Evaluate the survivors at image level and write their rows (see the module docstring).

    Needs Ray (started or attached by the caller). ``rerun``: evaluate survivors that already
    have an image row again (same keys: the rows are replaced, never duplicated).
    """
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    stage = spec.fidelity.image
    result = StageResult()
    if stage is None:
        return result
    folder = _folder(storage)
    root = folder.root
    store = folder.store()
    rows = store.read(sweep_id=sweep_id).to_pylist()
    metrics, modes = spec.objective_metrics(), spec.objective_modes()
    result.survivors = select_survivors(rows, metrics=metrics, modes=modes, survivors=stage.survivors)
    if not result.survivors:
        result.notes.append("image stage: no finished trial with finite objectives; nothing to evaluate")
        return result
    done = image_rows(rows)
    todo = [s for s in result.survivors if rerun or (s.trial_id, s.step) not in done]
    result.already_done = [s.trial_id for s in result.survivors if s not in todo]
    n = len(result.survivors)
    order = ", ".join(f"{m} {o}" for m, o in zip(metrics, modes, strict=True))
    say(f"image stage: {n} survivor(s) of the text-level ranking ({order}); {len(result.already_done)} already "
        f"evaluated, {len(todo)} to go; metrics {', '.join(stage.metrics)}")
    if not todo:
        result.notes.append(f"image stage: all {n} survivor(s) already have image rows")
        _calibrate(spec, store=store, sweep_id=sweep_id, storage=root, result=result, say=say)
        return result

    run = _StageRun(spec, stage=stage, folder=folder, sweep_id=sweep_id, result=result, say=say, done=done,
                    rerun=rerun)
    bases = run.bases(todo)
    if bases is None:
        return result
    run.survivors(todo, bases)
    written = len(result.evaluated) + len(result.already_done)
    result.notes.append(f"image stage: {written}/{n} survivor(s) have image rows "
                        f"({', '.join(s.trial_id for s in result.survivors)}); "
                        f"`sage pareto {root} --fidelity image` shows their front")
    if result.failed:
        reasons = "; ".join(f"{t}: {why}" for t, why in result.failed.items())
        result.notes.append(f"image stage: {len(result.failed)} survivor(s) failed ({reasons}); "
                            f"`sage sweep resume {root}` evaluates them again (no trial is rerun)")
    if result.stopped:
        result.notes.append("image stage: stopped before every survivor was evaluated")
    _calibrate(spec, store=store, sweep_id=sweep_id, storage=root, result=result, say=say)
    return result


class _StageRun:
    """One run of the stage past selection: the Ray task, the base encoders, the survivors."""

    def __init__(self, spec: SweepSpec, *, stage: ImageStage, folder: SweepDir, sweep_id: str, result: StageResult,
                 say: Callable[[str], None], done: Mapping[tuple[str, int], Mapping[str, Any]], rerun: bool):
        import ray  # lazy: ray (~0.2 s more here), only for the stage's Ray tasks

        self.spec, self.folder, self.sweep_id, self.result, self.say = spec, folder, sweep_id, result, say
        self.done, self.rerun, self.stage = done, rerun, stage
        cache = base_train_config(spec).get("cache_dir")
        self.cache_dir = str(Path(cache).expanduser() if cache else Path.home() / ".cache" / "sage-sweeps")
        res = spec.resources
        self.share = res.gpus if res.gpus else res.cpus
        # ray.remote's overloads spell positional parameters only; evaluate_encoder's are keyword-only
        task = ray.remote(evaluate_encoder)  # type: ignore[arg-type]
        self.task: Any = task.options(num_cpus=res.cpus, num_gpus=res.gpus, resources=dict(res.custom) or None,
                                      name="sage-image-stage")
        self.eval_values = dict(self.stage.eval)
        self.version = code_version()

    @staticmethod
    def encoder_of(s: Survivor) -> tuple[str, int | None]:
        ml = s.row.get("max_length")
        return str(s.row.get("encoder") or "minilm"), (int(ml) if isinstance(ml, (int, float)) else None)

    def bases(self, todo: list[Survivor]) -> dict[tuple[str, int | None], dict[str, float]] | None:
        """``base_*`` metrics per base encoder: once per sweep (and per distinct base, should the
        encoder be varied); None when a base failed (said in the result)."""
        import ray  # lazy: ray (~0.2 s more here), only for the stage's Ray tasks

        bases: dict[tuple[str, int | None], dict[str, float]] = {}
        for s in todo:
            key = self.encoder_of(s)
            if key in bases:
                continue
            known = None if self.rerun else _base_from_rows(self.done, key[0])
            if known is not None:
                bases[key] = known
                continue
            self.say(f"image stage: evaluating the base encoder {key[0]} (base_* columns, once per sweep)")
            try:
                out = ray.get(self.task.remote(key[0], max_length=key[1], eval_values=self.eval_values,
                                               cache_dir=self.cache_dir, base_metrics=None, storage=None))
            except Exception as exc:  # noqa: BLE001 - a task error is reported, the sweep stays resumable
                self.result.failed["base"] = error_text(exc)
                self.result.notes.append(f"image stage: the base encoder {key[0]} failed: "
                                         f"{self.result.failed['base']}; fix it and run "
                                         f"`sage sweep resume {self.folder.root}`")
                return None
            bases[key] = out["metrics"]
            self.result.generated["base"] = self.result.generated.get("base", 0) + out["generated"]
            self.say(f"image stage: base {key[0]}: " + _fmt_metrics(out["metrics"], self.stage.metrics)
                     + f" ({out['wall_s']:.0f} s, {out['generated']} image(s) generated)")
        return bases

    def _submit(self, s: Survivor,
                bases: Mapping[tuple[str, int | None], dict[str, float]]) -> tuple[Any, Survivor] | None:
        checkpoint = s.checkpoint or _find_checkpoint(self.folder, s.trial_id, s.step)
        if not checkpoint:
            self.result.failed[s.trial_id] = "its final text row names no checkpoint"
            return None
        s = Survivor(trial_id=s.trial_id, step=s.step, checkpoint=checkpoint, rank=s.rank, crowding=s.crowding,
                     row=s.row)
        self.say(f"image stage: evaluating survivor {self._index(s)}: {s.describe(self.spec.objective_metrics())}")
        enc, ml = self.encoder_of(s)
        ref = self.task.remote(checkpoint, max_length=ml, eval_values=self.eval_values, cache_dir=self.cache_dir,
                               base_metrics=bases[(enc, ml)], storage=self.folder.root,
                               robust_values=(self.spec.fidelity.robust or {}).get("image"))
        return ref, s

    def _index(self, s: Survivor) -> str:
        ids = [x.trial_id for x in self.result.survivors]
        return f"{ids.index(s.trial_id) + 1}/{len(ids)}"

    def survivors(self, todo: list[Survivor], bases: Mapping[tuple[str, int | None], dict[str, float]]) -> None:
        """At most max_concurrent tasks in flight; each row is written as soon as it is back."""
        import ray  # lazy: ray (~0.2 s more here), only for the stage's Ray tasks

        store, result = self.folder.store(), self.result
        in_flight: dict[Any, Survivor] = {}
        queue = list(todo)
        while queue or in_flight:
            while queue and len(in_flight) < self.spec.search.max_concurrent and not result.stopped:
                if self.folder.stop_requested():
                    result.stopped = True
                    break
                submitted = self._submit(queue.pop(0), bases)
                if submitted is not None:
                    in_flight[submitted[0]] = submitted[1]
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            s = in_flight.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - reported per survivor; the others go on
                result.failed[s.trial_id] = error_text(exc)
                self.say(f"image stage: survivor {s.trial_id} failed: {result.failed[s.trial_id]}")
                continue
            store.write([image_row(s, sweep_id=self.sweep_id, columns=out["columns"],
                                   base_encoder=self.encoder_of(s)[0], wall_s=out["wall_s"],
                                   device_share=self.share, code_version=self.version)])
            result.evaluated.append(s.trial_id)
            result.generated[s.trial_id] = out["generated"]
            self.say(f"image stage: survivor {self._index(s)} trial {s.trial_id}: "
                     + _fmt_metrics(out["metrics"], self.stage.metrics)
                     + f" ({out['wall_s']:.0f} s, {out['generated']} image(s) generated)")


def first_rung(spec: SweepSpec) -> int:
    """The step of the scheduler's first decision: the first rung, else the first text evaluation."""
    return spec.fidelity.rungs[0] if spec.fidelity.rungs else spec.fidelity.text_every


def _calibrate(spec: SweepSpec, *, store: Any, sweep_id: str, storage: str, result: StageResult,
               say: Callable[[str], None]) -> None:
    """The calibration table of the sweep's image rows, written beside its results (module docstring, 5)."""
    rows = store.read(sweep_id=sweep_id).to_pylist()
    n_image = len(image_rows(rows))
    if not n_image:
        return
    try:
        entries = calibration_table(rows, early_step=first_rung(spec))
        write_calibration(store, sweep_id=sweep_id, entries=entries)
    except (AnalysisError, StorageError) as exc:  # the image rows are written; a report that fails is said, not fatal
        result.notes.append(f"image stage: calibration report not written: {exc}")
        return
    result.calibration = entries
    objectives = spec.objective_metrics()
    shown = [e for e in calibration_display(entries) if e["text"] in objectives and e["image"] in ("asr", "tifa")]
    for e in shown:
        say(f"image stage: calibration ({e['text_at']} text rows, {e['n']} trials): {e['text']} vs {e['image']}: "
            f"Kendall {e['kendall']}, Spearman {e['spearman']}" + (f" ({e['note']})" if e["note"] else ""))
    result.notes.append(f"image stage: calibration of {len(entries)} text/image pair(s) over {n_image} trial(s) "
                        f"with image rows written; `sage sql {storage} \"SELECT * FROM calibration\"` or "
                        f"`sage report {storage} --out REPORT` shows it")


def _fmt_metrics(metrics: Mapping[str, float], requested: Iterable[str]) -> str:
    names = [m for m in requested if m in metrics] or list(metrics)[:4]
    return ", ".join(f"{m}={metrics[m]:.4g}" for m in names)
