"""``sweeps.run(spec)`` and ``sweeps.resume(dir)``: a validated spec -> a Ray Tune experiment.

The sweep folder, its files and the state machine of ``sweep.json``: :mod:`sweeps.sweep_dir`.
Base embeddings, codebook, evaluator base data and the image stage's images live in the
content-addressed user-level cache (``train.cache_dir`` / ``--cache-dir``, else ``$SAGE_CACHE_DIR``,
else ``~/.cache/sage-sweeps``), filled once by the driver and reused by every later sweep.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import tune
from ray.tune import ExperimentAnalysis

from sage_core.defs.errors import ConfigError, StorageError
from sage_core.version import code_version

from .cluster_checks import check_shared_storage
from .image_stage import run_image_stage
from .pareto_scheduler import build_scheduler, state_callbacks
from .resolved_trial import TrialResolver
from .schema_file import write_schema
from .search import build_search
from .spec import SweepSpec, base_train_config, load_spec
from .spec_checks import spec_error
from .stop_callback import StopFileCallback
from .store_callback import StoreCallback
from .sweep_dir import EXPERIMENT, STOP_FILE, SweepDir, SweepRecord
from .sweep_plan import SweepPlan, plan_of
from .warm_start import load_and_plan

__all__ = ["run", "resume", "SweepOutcome", "STOP_FILE", "resume_command", "StopFileCallback", "load_sweep_spec",
           "trial_counts"]

TRAIN_DRIVER_CPUS = 0.01  # a multi-worker trial's own process: it only waits on its Ray Train run


@dataclass
class SweepOutcome:
    storage: str
    sweep_id: str
    state: str                      # finished | failed | interrupted | stopped
    counts: dict[str, int] = field(default_factory=dict)
    resume_command: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items() if n) or "no trials"
        text = f"sweep {self.sweep_id} {self.state}: {counts}; results in {self.storage}/results"
        if self.resume_command:
            text += f"\n  resume with: {self.resume_command}"
        for note in self.notes:
            text += f"\n  note: {note}"
        return text


def resume_command(storage: str) -> str:
    return SweepDir.at(storage).resume_command()


# -- Ray ---------------------------------------------------------------------------------------
def _init_ray(spec: SweepSpec, *, address: str | None, num_cpus: float | None) -> bool:
    """Attach to ``address``/``RAY_ADDRESS`` or start a small local Ray; True if we started it."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the CLIReporter table with our objective columns
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    runtime_env = {"env_vars": {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                            "OMP_NUM_THREADS", "TORCH_EXTENSIONS_DIR")
                                if k in os.environ}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return False
    res = spec.resources
    per_trial = res.workers + (TRAIN_DRIVER_CPUS if res.workers > 1 else 0)
    cpus = num_cpus if num_cpus is not None else max(1.0, res.cpus * per_trial * spec.search.max_concurrent)
    custom = {k: v * res.workers * spec.search.max_concurrent for k, v in res.custom.items()}
    ray.init(address="local", num_cpus=int(-(-cpus // 1)), resources=custom or None, include_dashboard=False,
             runtime_env=runtime_env, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    return True


@contextlib.contextmanager
def _driver(spec: SweepSpec, *, record: SweepRecord, address: str | None, num_cpus: float | None,
            resumed: bool = False) -> Iterator[None]:
    """Ray started (or attached) and the storage checked; then the sweep is marked running (a
    resumed one moves back to running), and marked interrupted (with the resume command printed)
    if the body fails or is interrupted."""
    folder = record.folder
    started = _init_ray(spec, address=address, num_cpus=num_cpus)
    try:
        try:
            _check_storage_shared(folder.root)
        except ConfigError:
            if not folder.holds_sweep():  # a new sweep refused before it started: leave no spec behind
                folder.remove_spec()
            raise
        if resumed:
            record.move_to("running")
        else:
            record.save()
        try:
            yield
        except BaseException:
            if record.state == "running":
                record.move_to("interrupted")
            print(f"sweep {record.sweep_id} did not finish; resume with: {folder.resume_command()}", file=sys.stderr)
            raise
    finally:
        if started:
            ray.shutdown()


def _check_storage_shared(storage: str) -> None:
    """On a multi-node cluster the storage must be shared; say so before any trial starts."""
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    problem = check_shared_storage(storage, num_nodes=max(nodes, 1))
    if problem:
        raise ConfigError(problem)


def _prepare_bases(plan: SweepPlan, *, progress: bool) -> int:
    """Run ``sage_core.trainer.prepare`` once per distinct ``TrainConfig.base_data_key()`` of the plan."""
    from sage_core.trainer import prepare  # lazy: torch (~1 s), off `sage sweep stop`, which imports this module

    configs = plan.base_configs()
    for cfg in configs:
        prepare(cfg, progress=progress)
    return len(configs)


@dataclass(frozen=True)
class TuneParts:
    """What ``tune.Tuner`` (or ``Tuner.restore``) needs for one sweep."""

    trainable: Any
    param_space: dict[str, Any]
    tune_config: Any
    run_config: Any


def _trial_context(spec: SweepSpec, *, folder: SweepDir, sweep_id: str, base: dict[str, Any]):
    from .trial import TrialContext  # lazy: torch (~1 s), off `sage sweep stop`, which imports this module

    res = spec.resources
    worker_resources = {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus else {}), **res.custom}
    return TrialContext(sweep_id=sweep_id, base=base, variants=spec.variants,
                        objectives=tuple(spec.objective_metrics()),
                        device_share=(res.gpus if res.gpus else res.cpus) * res.workers, workers=res.workers,
                        worker_resources=worker_resources, train_storage=folder.train,
                        robust=spec.fidelity.robust, proximal=spec.fidelity.proximal,
                        attack=spec.fidelity.attack_settings(), attack_at=_attack_at(spec),
                        scores_root=folder.prompt_scores)


def _attack_at(spec: SweepSpec) -> tuple[int, ...] | None:
    steps = spec.fidelity.attack_steps()
    return None if steps is None else tuple(steps)


def _build(spec: SweepSpec, *, folder: SweepDir, sweep_id: str, plan: SweepPlan | None = None, search: Any = None,
           prior: Any = None) -> TuneParts:
    """``plan``: the sweep's plan (None for a resumed sweep: Tune restores its own callbacks, which
    resolve each trial once); ``search``: the search plan when it was built already (with a warm
    start's ``prior``)."""
    from .tracking import tracking_callbacks  # lazy: mlflow (~0.7 s), only for tracking
    from .trial import train_trial  # lazy: torch (~1 s), off `sage sweep stop`, which imports this module

    base = dict(plan.base) if plan is not None else base_train_config(spec)
    res = spec.resources
    # A multi-worker trial only drives a Ray Train run; its workers reserve the resources themselves.
    resources = ({"cpu": TRAIN_DRIVER_CPUS} if res.workers > 1 else {"cpu": res.cpus, "gpu": res.gpus, **res.custom})
    context = _trial_context(spec, folder=folder, sweep_id=sweep_id, base=base)
    trainable = tune.with_resources(tune.with_parameters(train_trial, context=context), resources)
    if search is None:  # a warm start's plan comes built, its notes printed with the prior's summary
        search = build_search(spec, dims=plan.dimensions if plan is not None else None)
        if search.notes and plan is not None:  # a new sweep (a resumed one gets its searcher back from Tune)
            print(*search.notes, sep="\n", file=sys.stderr, flush=True)
    scheduler = build_scheduler(spec, folder.scheduler_state, prior=prior.trials if prior else ())
    tune_config = tune.TuneConfig(search_alg=search.search_alg, scheduler=scheduler,
                                  num_samples=search.num_samples, max_concurrent_trials=spec.search.max_concurrent,
                                  reuse_actors=_reuse_actors(spec))
    # shared: each trial resolved once, from the plan's configs where it has the trial's params
    resolver = TrialResolver(base=base, variants=spec.variants, planned=plan.configs if plan is not None else None)
    callbacks = [StoreCallback(results_root=folder.results, sweep_id=sweep_id, base=base, variants=spec.variants,
                               code_version=code_version(), resolver=resolver),
                 StopFileCallback(stop_path=folder.stop_file), *state_callbacks(scheduler)]
    # TensorBoard files always, MLflow or W&B as spec.tracking says (a resumed sweep restores these with tuner.pkl).
    callbacks += tracking_callbacks(spec, storage=folder.root, sweep_id=sweep_id, resolver=resolver)
    reporter = tune.CLIReporter(metric_columns=["step", *spec.objective_metrics()],
                                parameter_columns=list(plan.dimensions if plan is not None else spec.dimensions()),
                                max_report_frequency=30)
    run_config = tune.RunConfig(name=EXPERIMENT, storage_path=folder.ray, callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                progress_reporter=reporter, verbose=1)
    return TuneParts(trainable=trainable, param_space=search.param_space, tune_config=tune_config,
                     run_config=run_config)


def _pruned_ids(scheduler: Any) -> set[str] | None:
    """Trials the scheduler stopped (None: unknown, a Pareto scheduler without a state file whose
    in-memory records are empty, e.g. a resumed driver on object storage)."""
    if not hasattr(scheduler, "pruned_trials"):
        return set()  # FIFO stops nothing
    pruned = scheduler.pruned_trials()
    return pruned if pruned or scheduler.state_path else None


def _reuse_actors(spec: SweepSpec) -> bool:
    """A reused actor skips the interpreter start and the torch/DeepSpeed imports of every trial
    after the first in its slot. Only on one node: after a lost node Tune would try to reuse actors
    that died with it and burn the trials' retries on them."""
    return spec.resources.workers == 1 and sum(1 for n in ray.nodes() if n.get("Alive")) == 1


def trial_counts(trials: list[Any], pruned: set[str] | None = None) -> dict[str, int]:
    """Counts by state of Tune trials (``status``, ``last_result``, ``trial_id``). An interrupt
    (Ctrl+C, stop) also leaves trials TERMINATED before their last step: only those the scheduler
    stopped are pruned; the others are unfinished (resumable)."""
    counts = {"finished": 0, "pruned": 0, "failed": 0, "unfinished": 0}
    for t in trials:
        last = t.last_result or {}
        if t.status == "ERROR":
            counts["failed"] += 1
        elif t.status == "TERMINATED" and last.get("final"):
            counts["finished"] += 1
        elif t.status == "TERMINATED" and (pruned is None or str(t.trial_id) in pruned):
            counts["pruned"] += 1
        else:
            counts["unfinished"] += 1
    return counts


def _experiment_trials(results: Any) -> list[Any]:
    """The trials of a finished ``Tuner.fit()``, read back through Tune's public ExperimentAnalysis."""
    return ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem).trials


def _end_state(counts: dict[str, int], *, stopped: bool) -> str:
    # A stop interrupts Tune: the trials it then stops look TERMINATED (not unfinished) and the
    # search may not have produced every trial yet, so the STOP file alone decides "stopped".
    if stopped:
        return "stopped"
    if counts["unfinished"]:
        return "interrupted"
    return "failed" if counts["failed"] else "finished"


def _finish(spec: SweepSpec, *, record: SweepRecord, counts: dict[str, int]) -> SweepOutcome:
    folder = record.folder
    state = _end_state(counts, stopped=folder.stop_requested())
    if state == "stopped":
        folder.clear_stop()
    notes = []
    if spec.fidelity.image is not None and state == "finished":
        # Every trial finished: from here a resumed driver runs only the image stage, no trial again.
        record.note(tune_finished=True, counts=counts)
        stage = run_image_stage(spec, storage=folder, sweep_id=record.sweep_id)
        notes += stage.notes
        if stage.stopped:
            state = "stopped"
            folder.clear_stop()
        elif stage.failed:
            state = "failed"
    try:
        folder.store().compact()
    except Exception as exc:  # noqa: BLE001 - compaction is an optimisation, never fatal
        notes.append(f"results compaction skipped: {exc}")
    record.move_to(state, counts=counts)
    resume = folder.resume_command() if state in ("interrupted", "stopped", "failed") else None
    if state == "failed" and counts.get("failed"):
        notes.append(f"{counts['failed']} trial(s) failed after max_failures={spec.max_failures} retries; "
                     f"`sage sweep status {folder.root}` shows why; `{resume} --retry-failed` retries them")
    return SweepOutcome(storage=folder.root, sweep_id=record.sweep_id, state=state, counts=counts,
                        resume_command=resume, notes=notes)


def _fit(tuner: Any, parts: TuneParts) -> dict[str, int]:
    results = tuner.fit()
    return trial_counts(_experiment_trials(results), _pruned_ids(parts.tune_config.scheduler))


# -- public API --------------------------------------------------------------------------------
def run(spec: SweepSpec | str, *, overrides: dict[str, Any] | None = None, storage: str | None = None,
        address: str | None = None, num_cpus: float | None = None, progress: bool = True) -> SweepOutcome:
    """Run a sweep to the end (or until stopped); every result lands in ``<storage>/results``."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, overrides=overrides, storage=storage)
    elif overrides or storage:
        raise ConfigError("pass overrides/storage with a spec name or path, not with a loaded SweepSpec")
    folder = SweepDir.at(spec.storage)
    if folder.holds_sweep():
        state = folder.read_meta().get("state")
        hint = (f"resume it with `{folder.resume_command()}`" if state != "finished"
                else "it is finished; inspect it with `sage sweep status`")
        raise StorageError(f"storage={folder.root!r} already holds a sweep (state {state}); {hint}, "
                           "or pick a new --storage")
    spec = spec.model_copy(update={"storage": folder.root})
    plan = plan_of(spec)  # the one its validation built (a spec passed in is checked here)
    if plan.problems:
        raise spec_error(list(plan.problems), name=spec.name)
    prior, search = _warm_start(spec, plan)  # before anything is written: a bad warm start leaves no folder behind
    record = SweepRecord.new(folder, sweep_id=f"{spec.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}",
                             name=spec.name)
    folder.write_spec(spec.to_yaml())
    with _driver(spec, record=record, address=address, num_cpus=num_cpus):
        _prepare_bases(plan, progress=progress)
        write_schema(folder, spec=spec, sweep_id=record.sweep_id, plan=plan)
        if prior is not None:
            print(prior.summary(), *search.notes, sep="\n", file=sys.stderr, flush=True)
            record.note(warm_start={"from": prior.source, "sweep_id": prior.sweep_id, "trials": len(prior.trials),
                                    "reused": len(search.reused)})
            if search.reused:
                folder.store().write(prior.rows_of(search.reused))
        parts = _build(spec, folder=folder, sweep_id=record.sweep_id, plan=plan, search=search, prior=prior)
        tuner = tune.Tuner(parts.trainable, param_space=parts.param_space, tune_config=parts.tune_config,
                           run_config=parts.run_config)
        return _finish(spec, record=record, counts=_fit(tuner, parts))


def _warm_start(spec: SweepSpec, plan: SweepPlan) -> tuple[Any, Any]:
    """``(prior, search plan)`` of a spec with ``search.warm_start`` (the earlier sweep read and
    checked, :mod:`sweeps.warm_start`); ``(None, None)`` without one."""
    return load_and_plan(spec, plan=plan) if spec.search.warm_start else (None, None)


def load_sweep_spec(storage: str) -> tuple[SweepSpec, dict[str, Any]]:
    """The saved spec and sweep.json of a sweep folder, checked (one-line errors naming the file)."""
    return SweepDir.at(storage).load()


def resume(storage: str, *, retry_failed: bool = False, address: str | None = None,
           num_cpus: float | None = None) -> SweepOutcome:
    """Finish an interrupted sweep: finished trials are kept, unfinished ones continue from their
    last checkpoint; ``retry_failed`` also restarts failed trials from theirs."""
    folder = SweepDir.at(storage)
    spec, meta = folder.load()
    record = SweepRecord.for_resume(folder, meta)
    if meta.get("tune_finished"):
        # Every trial had finished when the driver stopped: only the image stage is left; no trial reruns.
        folder.clear_stop()
        with _driver(spec, record=record, address=address, num_cpus=num_cpus, resumed=True):
            return _finish(spec, record=record, counts={**trial_counts([]), **meta.get("counts", {})})
    if not tune.Tuner.can_restore(folder.experiment):
        raise StorageError(f"{folder.experiment!r} holds no Tune experiment state yet (the driver stopped before "
                           f"the first trial started); remove {folder.root!r} and run the sweep again")
    folder.clear_stop()
    with _driver(spec, record=record, address=address, num_cpus=num_cpus, resumed=True):
        parts = _build(spec, folder=folder, sweep_id=record.sweep_id)
        tuner = tune.Tuner.restore(folder.experiment, trainable=parts.trainable, resume_unfinished=True,
                                   resume_errored=retry_failed, restart_errored=False, param_space=None)
        return _finish(spec, record=record, counts=_fit(tuner, parts))
