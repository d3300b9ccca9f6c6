"""``sweeps.run(spec)`` and ``sweeps.resume(dir)``: a validated spec -> a Ray Tune experiment.

Sweep folder (``spec.storage``, a local/shared path or an object-storage URI)::

    spec.yaml              the resolved spec (what `resume` rebuilds the sweep from)
    sweep.json             sweep_id, state (running/finished/failed/interrupted/stopped), counts;
                           tune_finished once every trial finished (a resume then runs only the image stage)
    ray/tune/              the Tune experiment (trial checkpoints, experiment state)
    ray/train/<trial_id>/  Ray Train runs of multi-worker trials (their checkpoints)
    results/               analysis.ResultStore: one row per (sweep_id, trial_id, step, fidelity)
    scheduler_state.json   rung records of the Pareto scheduler (survive a resumed driver)
    STOP                   written by `sage sweep stop`; the driver stops gracefully when it sees it

Base embeddings, codebook, evaluator base data and the image stage's images live in the
content-addressed user-level cache (``train.cache_dir`` / ``--cache-dir``, else ``$SAGE_CACHE_DIR``,
else ``~/.cache/sage-sweeps``), filled once by the driver and reused by every later sweep.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sage_core.errors import ConfigError, StorageError

from .spec import SweepSpec, VARIANT, base_train_config, is_uri, load_spec, trial_values
from .space import enumerate_combinations

__all__ = ["run", "resume", "SweepOutcome", "sweep_paths", "STOP_FILE", "CACHE_KEYS", "resume_command",
           "StopFileCallback"]

STOP_FILE = "STOP"
TRAIN_DRIVER_CPUS = 0.01  # a multi-worker trial's own process: it only waits on its Ray Train run
EXPERIMENT = "tune"
# TrainConfig fields the base data (embedding cache, codebook, evaluator data) depends on.
CACHE_KEYS = ("encoder", "max_length", "safe_prompts", "unsafe_prompts", "concept", "diag_prompts",
              "diag_samples", "diag_k", "cache_dir")


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
    return f"sage sweep resume {storage}"


def sweep_paths(storage: str) -> dict[str, str]:
    root = storage.rstrip("/")
    return {"root": root, "spec": f"{root}/spec.yaml", "meta": f"{root}/sweep.json",
            "ray": f"{root}/ray", "experiment": f"{root}/ray/{EXPERIMENT}", "train": f"{root}/ray/train",
            "results": f"{root}/results",
            "scheduler": f"{root}/scheduler_state.json", "stop": f"{root}/{STOP_FILE}"}


# -- small storage helpers (local path or URI) -------------------------------------------------
def _fs(path: str):
    import pyarrow.fs as pafs

    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path.removeprefix("file://")).expanduser().resolve())


def read_text(path: str) -> str | None:
    import pyarrow.fs as pafs

    fs, p = _fs(path)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    tmp = p + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode("utf-8"))
    fs.move(tmp, p)


def delete_file(path: str) -> None:
    import pyarrow.fs as pafs

    fs, p = _fs(path)
    if fs.get_file_info(p).type == pafs.FileType.File:
        fs.delete_file(p)


def _local_storage(storage: str) -> str:
    """Absolute local path (Tune needs one) or the URI unchanged."""
    if is_uri(storage):
        return storage
    return str(Path(storage.removeprefix("file://")).expanduser().resolve())


# -- control ---------------------------------------------------------------------------------
try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover
    _TuneCallback = object  # type: ignore[assignment,misc]


class StopFileCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """Polls ``<storage>/STOP``; when present, interrupts Tune the way Ctrl+C does (resumable)."""

    def __init__(self, *, stop_path: str):
        self.stop_path = stop_path
        self.requested = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.requested or iteration % 5:
            return
        if read_text(self.stop_path) is not None:
            self.requested = True
            # Tune's own SIGINT/SIGUSR1 handler: checkpoint the experiment and return from fit().
            os.kill(os.getpid(), signal.SIGUSR1)


# -- Ray ---------------------------------------------------------------------------------------
def _init_ray(spec: SweepSpec, *, address: str | None, num_cpus: float | None) -> bool:
    """Attach to ``address``/``RAY_ADDRESS`` or start a small local Ray; True if we started it."""
    import ray

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
             runtime_env=runtime_env, log_to_driver=True, configure_logging=True, logging_level="WARNING")
    return True


@contextlib.contextmanager
def _driver(spec: SweepSpec, *, storage: str, meta: dict[str, Any], paths: dict[str, str], address: str | None,
            num_cpus: float | None) -> Iterator[None]:
    """Ray started (or attached) and the storage checked; then the sweep is marked running, and
    marked interrupted (with the resume command printed) if the body fails or is interrupted."""
    import ray

    started = _init_ray(spec, address=address, num_cpus=num_cpus)
    try:
        try:
            _check_storage_shared(storage)
        except ConfigError:
            if read_text(paths["meta"]) is None:  # a new sweep refused before it started: leave no spec behind
                delete_file(paths["spec"])
            raise
        write_text(paths["meta"], json.dumps(meta, indent=2))
        try:
            yield
        except BaseException:
            meta.update(state="interrupted", ended=_now())
            write_text(paths["meta"], json.dumps(meta, indent=2))
            print(f"sweep {meta['sweep_id']} did not finish; resume with: {resume_command(storage)}",
                  file=sys.stderr)
            raise
    finally:
        if started:
            ray.shutdown()


def _check_storage_shared(storage: str) -> None:
    """On a multi-node cluster the storage must be shared; say so before any trial starts."""
    import ray

    from sage_core.errors import ConfigError

    from .cluster_checks import check_shared_storage

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    problem = check_shared_storage(storage, num_nodes=max(nodes, 1))
    if problem:
        raise ConfigError(problem)


def _prepare_bases(spec: SweepSpec, base: dict[str, Any], *, progress: bool) -> int:
    """Run ``sage_core.trainer.prepare`` once per distinct base-data configuration."""
    from sage_core.config import load_config
    from sage_core.trainer import prepare

    seen: set[str] = set()
    for combo in enumerate_combinations(spec.dimensions()):
        values = trial_values(base, {k: v for k, v in combo.items() if k in CACHE_KEYS or k == VARIANT},
                              spec.variants)
        cfg = load_config(overrides=values)
        key = json.dumps({k: getattr(cfg, k) for k in CACHE_KEYS}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        prepare(cfg, progress=progress)
    return len(seen)


def _build(spec: SweepSpec, *, storage: str, sweep_id: str) -> tuple[Any, dict, Any, list, Any]:
    """trainable, param_space, tune_config, callbacks, run_config."""
    from ray import tune

    from sage_core.version import code_version

    from .pareto_scheduler import ParetoSuccessiveHalving
    from .search import build_search
    from .store_callback import StoreCallback
    from .tracking import tracking_callbacks
    from .trial import TrialContext, train_trial

    paths = sweep_paths(storage)
    base = base_train_config(spec, storage_root=None if is_uri(storage) else Path(storage))
    res = spec.resources
    share = (res.gpus if res.gpus else res.cpus) * res.workers
    worker_resources = {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus else {}), **res.custom}
    ctx = TrialContext(sweep_id=sweep_id, base=base, variants=spec.variants,
                       objectives=tuple(spec.objective_metrics()), device_share=share, workers=res.workers,
                       worker_resources=worker_resources, train_storage=paths["train"],
                       robust=spec.fidelity.robust, proximal=spec.fidelity.proximal)
    if res.workers > 1:
        # The trial only drives a Ray Train run; its workers reserve the resources themselves.
        resources = {"cpu": TRAIN_DRIVER_CPUS}
    else:
        resources = {"cpu": res.cpus, "gpu": res.gpus, **res.custom}
    trainable = tune.with_resources(tune.with_parameters(train_trial, context=ctx), resources)
    plan = build_search(spec)
    if spec.scheduler.kind == "pareto_sh":
        scheduler = ParetoSuccessiveHalving(metrics=spec.objective_metrics(), modes=spec.objective_modes(),
                                            rungs=spec.fidelity.rungs, eta=spec.scheduler.eta,
                                            state_path=None if is_uri(storage) else paths["scheduler"])
    else:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(search_alg=plan.search_alg, scheduler=scheduler, num_samples=plan.num_samples,
                                  max_concurrent_trials=spec.search.max_concurrent,
                                  reuse_actors=_reuse_actors(spec))
    callbacks = [StoreCallback(results_root=paths["results"], sweep_id=sweep_id, base=base, variants=spec.variants,
                               code_version=code_version()),
                 StopFileCallback(stop_path=paths["stop"])]
    # TensorBoard files always, MLflow or W&B as spec.tracking says (a resumed sweep restores these with tuner.pkl).
    callbacks += tracking_callbacks(spec, storage=storage, sweep_id=sweep_id, base=base)
    reporter = tune.CLIReporter(metric_columns=["step", *spec.objective_metrics()],
                                parameter_columns=list(spec.dimensions()), max_report_frequency=30)
    run_config = tune.RunConfig(name=EXPERIMENT, storage_path=paths["ray"], callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                progress_reporter=reporter, verbose=1)
    return trainable, plan.param_space, tune_config, callbacks, run_config


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
    import ray

    return spec.resources.workers == 1 and sum(1 for n in ray.nodes() if n.get("Alive")) == 1


def _trial_states(results: Any, pruned: set[str] | None = None) -> dict[str, int]:
    """Counts by state. An interrupt (Ctrl+C, stop) also leaves trials TERMINATED before their last
    step: only those the scheduler stopped are pruned; the others are unfinished (resumable)."""
    counts = {"finished": 0, "pruned": 0, "failed": 0, "unfinished": 0}
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None) or []
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


def _finish(spec: SweepSpec, *, storage: str, sweep_id: str, results: Any, meta: dict[str, Any],
            scheduler: Any = None) -> SweepOutcome:
    from analysis.store import ResultStore

    paths = sweep_paths(storage)
    # results None: a resumed driver whose Tune part had finished (only the image stage was left).
    counts = (_trial_states(results, _pruned_ids(scheduler)) if results is not None
              else {**_trial_states(None), **meta.get("counts", {})})
    stopped = read_text(paths["stop"]) is not None
    # A stop interrupts Tune: the trials it then stops look TERMINATED (not unfinished) and the
    # search may not have produced every trial yet, so the STOP file alone decides "stopped".
    if stopped:
        state = "stopped"
    elif counts["unfinished"]:
        state = "interrupted"
    elif counts["failed"]:
        state = "failed"
    else:
        state = "finished"
    if stopped:
        delete_file(paths["stop"])
    notes = []
    if spec.fidelity.image is not None and state == "finished":
        from .image_stage import run_image_stage

        # Every trial finished: from here a resumed driver runs only the image stage, no trial again.
        meta.update(tune_finished=True, counts=counts)
        write_text(paths["meta"], json.dumps(meta, indent=2))
        stage = run_image_stage(spec, storage=storage, sweep_id=sweep_id)
        notes += stage.notes
        if stage.stopped:
            state = "stopped"
            delete_file(paths["stop"])
        elif stage.failed:
            state = "failed"
    try:
        ResultStore(paths["results"]).compact()
    except Exception as exc:  # noqa: BLE001 - compaction is an optimisation, never fatal
        notes.append(f"results compaction skipped: {exc}")
    meta.update(state=state, counts=counts, ended=_now())
    write_text(paths["meta"], json.dumps(meta, indent=2))
    resume = resume_command(storage) if state in ("interrupted", "stopped", "failed") else None
    if state == "failed" and counts.get("failed"):
        notes.append(f"{counts['failed']} trial(s) failed after max_failures={spec.max_failures} retries; "
                     f"`sage sweep status {storage}` shows why; `{resume} --retry-failed` retries them")
    return SweepOutcome(storage=storage, sweep_id=sweep_id, state=state, counts=counts, resume_command=resume,
                        notes=notes)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- public API --------------------------------------------------------------------------------
def run(spec: SweepSpec | str, *, overrides: dict[str, Any] | None = None, storage: str | None = None,
        address: str | None = None, num_cpus: float | None = None, progress: bool = True) -> SweepOutcome:
    """Run a sweep to the end (or until stopped); every result lands in ``<storage>/results``."""
    from ray import tune

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, overrides=overrides, storage=storage)
    elif overrides or storage:
        raise ConfigError("pass overrides/storage with a spec name or path, not with a loaded SweepSpec")
    storage = _local_storage(spec.storage)
    paths = sweep_paths(storage)
    existing = read_text(paths["meta"])
    if existing is not None:
        from .sweep_files import parse_sweep_meta

        state = parse_sweep_meta(existing, path=paths["meta"]).get("state")
        hint = (f"resume it with `{resume_command(storage)}`" if state != "finished"
                else "it is finished; inspect it with `sage sweep status`")
        raise StorageError(f"storage={storage!r} already holds a sweep (state {state}); {hint}, "
                           "or pick a new --storage")
    spec = spec.model_copy(update={"storage": storage})
    sweep_id = f"{spec.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    meta = {"sweep_id": sweep_id, "name": spec.name, "state": "running", "started": _now(),
            "driver_pid": os.getpid(), "driver_host": socket.gethostname()}
    write_text(paths["spec"], spec.to_yaml())
    with _driver(spec, storage=storage, meta=meta, paths=paths, address=address, num_cpus=num_cpus):
        base = base_train_config(spec, storage_root=None if is_uri(storage) else Path(storage))
        _prepare_bases(spec, base, progress=progress)
        trainable, param_space, tune_config, _, run_config = _build(spec, storage=storage, sweep_id=sweep_id)
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        results = tuner.fit()
        return _finish(spec, storage=storage, sweep_id=sweep_id, results=results, meta=meta,
                       scheduler=tune_config.scheduler)


def load_sweep_spec(storage: str) -> tuple[SweepSpec, dict[str, Any]]:
    """The saved spec and sweep.json of a sweep folder, checked (one-line errors naming the file)."""
    from .sweep_files import read_sweep_folder

    storage = _local_storage(storage)
    return read_sweep_folder(storage, sweep_paths(storage))


def resume(storage: str, *, retry_failed: bool = False, address: str | None = None,
           num_cpus: float | None = None) -> SweepOutcome:
    """Finish an interrupted sweep: finished trials are kept, unfinished ones continue from their
    last checkpoint; ``retry_failed`` also restarts failed trials from theirs."""
    from ray import tune

    storage = _local_storage(storage)
    spec, meta = load_sweep_spec(storage)
    paths = sweep_paths(storage)
    if meta.get("state") == "finished":
        raise StorageError(f"sweep {meta.get('sweep_id')} in {storage!r} is already finished; nothing to resume")
    from .status import driver_alive

    if meta.get("state") == "running" and meta.get("driver_pid") != os.getpid() and driver_alive(meta):
        raise StorageError(f"sweep {meta['sweep_id']} in {storage!r} is running (driver pid {meta.get('driver_pid')}); "
                           f"stop it first with `sage sweep stop {storage}`, or wait for it to finish")
    if meta.get("tune_finished"):
        # Every trial had finished when the driver stopped: only the image stage is left; no trial reruns.
        delete_file(paths["stop"])
        meta.update(state="running", resumed=_now(), driver_pid=os.getpid(), driver_host=socket.gethostname())
        with _driver(spec, storage=storage, meta=meta, paths=paths, address=address, num_cpus=num_cpus):
            return _finish(spec, storage=storage, sweep_id=meta["sweep_id"], results=None, meta=meta)
    if not tune.Tuner.can_restore(paths["experiment"]):
        raise StorageError(f"{paths['experiment']!r} holds no Tune experiment state yet (the driver stopped before "
                           f"the first trial started); remove {storage!r} and run the sweep again")
    delete_file(paths["stop"])
    meta.update(state="running", resumed=_now(), driver_pid=os.getpid(), driver_host=socket.gethostname())
    with _driver(spec, storage=storage, meta=meta, paths=paths, address=address, num_cpus=num_cpus):
        trainable, _, tune_config, _, _ = _build(spec, storage=storage, sweep_id=meta["sweep_id"])
        tuner = tune.Tuner.restore(paths["experiment"], trainable=trainable, resume_unfinished=True,
                                   resume_errored=retry_failed, restart_errored=False,
                                   param_space=None)
        results = tuner.fit()
        return _finish(spec, storage=storage, sweep_id=meta["sweep_id"], results=results, meta=meta,
                       scheduler=tune_config.scheduler)

