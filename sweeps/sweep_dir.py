"""A sweep folder (``spec.storage``, a local/shared path or an object-storage URI)::

    spec.yaml              the resolved spec (what `resume` rebuilds the sweep from)
    sweep.json             sweep_id, state (running/finished/failed/interrupted/stopped), counts;
                           tune_finished once every trial finished (a resume then runs only the image stage)
    schema.json            the column roles of the results (sweeps.schema_file, read by analysis)
    ray/tune/              the Tune experiment (trial checkpoints, experiment state)
    ray/train/<trial_id>/  Ray Train runs of multi-worker trials (their checkpoints)
    results/               analysis.ResultStore: one row per (sweep_id, trial_id, step, fidelity)
    prompt_scores/         per-prompt scores of every text evaluation (analysis.prompt_scores)
    scheduler_state.json   rung records of the Pareto scheduler (survive a resumed driver)
    STOP                   written by `sage sweep stop`; the driver stops gracefully when it sees it

:class:`SweepDir` names the paths and does the folder's I/O; :class:`SweepRecord` is the state
machine of ``sweep.json``, the one place that changes a sweep's state::

    (new) -> running -> finished | failed | interrupted | stopped
    failed | interrupted | stopped -> running   (a resumed driver)
    running -> running                          (only a resume taking over from a dead driver)

A finished sweep never changes state again. Runner, image stage, status, stop and resume share them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import psutil

from analysis.prompt_scores import FOLDER
from analysis.store import ResultStore
from sage_core.defs.errors import StorageError

from .spec import is_uri
from .storage_io import delete_file, local_storage, read_text, write_text
from .sweep_files import parse_sweep_meta, read_sweep_folder

__all__ = ["SweepDir", "SweepRecord", "TRANSITIONS", "EXPERIMENT", "STOP_FILE", "driver_alive"]

EXPERIMENT = "tune"
STOP_FILE = "STOP"
# state -> the states a driver may move it to; "running" -> "running" is a resume taking over.
TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType({
    "running": frozenset({"running", "finished", "failed", "interrupted", "stopped"}),
    "interrupted": frozenset({"running"}),
    "stopped": frozenset({"running"}),
    "failed": frozenset({"running"}),
    "finished": frozenset(),
})


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SweepDir:
    """Paths and I/O of one sweep folder; ``SweepDir.at(storage)`` normalises a local path."""

    root: str

    @classmethod
    def at(cls, storage: str) -> SweepDir:
        return cls(local_storage(storage).rstrip("/"))

    @property
    def is_uri(self) -> bool:
        return is_uri(self.root)

    @property
    def spec_file(self) -> str:
        return f"{self.root}/spec.yaml"

    @property
    def meta_file(self) -> str:
        return f"{self.root}/sweep.json"

    @property
    def schema_file(self) -> str:
        return f"{self.root}/schema.json"

    @property
    def ray(self) -> str:
        return f"{self.root}/ray"

    @property
    def experiment(self) -> str:
        return f"{self.root}/ray/{EXPERIMENT}"

    @property
    def train(self) -> str:
        return f"{self.root}/ray/train"

    @property
    def results(self) -> str:
        return f"{self.root}/results"

    @property
    def prompt_scores(self) -> str:
        return f"{self.root}/{FOLDER}"

    @property
    def scheduler_state(self) -> str | None:
        """The Pareto scheduler's state file; None on object storage (the scheduler writes local files)."""
        return None if self.is_uri else f"{self.root}/scheduler_state.json"

    @property
    def stop_file(self) -> str:
        return f"{self.root}/{STOP_FILE}"

    def resume_command(self) -> str:
        return f"sage sweep resume {self.root}"

    # -- I/O -----------------------------------------------------------------------------------
    def holds_sweep(self) -> bool:
        return read_text(self.meta_file) is not None

    def read_meta(self) -> dict[str, Any]:
        """``sweep.json``, checked (one-line errors naming the file)."""
        text = read_text(self.meta_file)
        if text is None:
            raise StorageError(f"{self.root!r} holds no sweep (no sweep.json)")
        return parse_sweep_meta(text, path=self.meta_file)

    def load(self):
        """``(spec, meta)``: the saved spec and sweep.json, both checked."""
        return read_sweep_folder(self.root, spec_file=self.spec_file, meta_file=self.meta_file,
                                 scheduler_file=self.scheduler_state)

    def write_spec(self, text: str) -> None:
        write_text(self.spec_file, text)

    def remove_spec(self) -> None:
        delete_file(self.spec_file)

    def write_file(self, path: str, text: str) -> None:
        """A file of this folder, written atomically (temporary name, then renamed)."""
        write_text(path, text)

    def stop_requested(self) -> bool:
        return read_text(self.stop_file) is not None

    def request_stop(self, sweep_id: str) -> str:
        write_text(self.stop_file, json.dumps({"requested_by": "sage sweep stop", "sweep_id": sweep_id}))
        return self.stop_file

    def clear_stop(self) -> None:
        delete_file(self.stop_file)

    def store(self):
        return ResultStore(self.results)

    def rows(self, sweep_id: str, *, skip_bad: bool = False) -> list[dict[str, Any]]:
        """Every stored row of the sweep, as dicts (``skip_bad``: see ``ResultStore.read``)."""
        return self.store().read(sweep_id=sweep_id, skip_bad=skip_bad).to_pylist()


class SweepRecord:
    """``sweep.json`` of one driver: every state change goes through :meth:`move_to` (see the
    module docstring for the allowed transitions) and is written at once."""

    def __init__(self, folder: SweepDir, meta: Mapping[str, Any]):
        self.folder = folder
        self._meta = dict(meta)

    @classmethod
    def new(cls, folder: SweepDir, *, sweep_id: str, name: str) -> SweepRecord:
        """A new sweep, running under this process (written by :meth:`save`)."""
        return cls(folder, {"sweep_id": sweep_id, "name": name, "state": "running", "started": _now(),
                            "driver_pid": os.getpid(), "driver_host": socket.gethostname()})

    @classmethod
    def for_resume(cls, folder: SweepDir, meta: Mapping[str, Any]) -> SweepRecord:
        """The record of a sweep a new driver takes over: refused when it is finished or its driver runs."""
        record = cls(folder, meta)
        where = f"sweep {record.sweep_id} in {folder.root!r}"
        if record.state == "finished":
            raise StorageError(f"{where} is already finished; nothing to resume")
        if record.state == "running" and meta.get("driver_pid") != os.getpid() and driver_alive(meta):
            raise StorageError(f"{where} is running (driver pid {meta.get('driver_pid')}); stop it first with "
                               f"`sage sweep stop {folder.root}`, or wait for it to finish")
        return record

    @property
    def sweep_id(self) -> str:
        return str(self._meta["sweep_id"])

    @property
    def state(self) -> str:
        return str(self._meta["state"])

    @property
    def meta(self) -> Mapping[str, Any]:
        return MappingProxyType(self._meta)

    def save(self) -> None:
        self.folder.write_file(self.folder.meta_file, json.dumps(self._meta, indent=2))

    def move_to(self, state: str, **fields: Any) -> None:
        """Change the state (refused unless ``TRANSITIONS`` allows it) and write sweep.json."""
        allowed = TRANSITIONS.get(self.state, frozenset())
        if state not in allowed:
            shown = ", ".join(sorted(allowed)) or "none: a finished sweep is final"
            raise StorageError(f"sweep {self.sweep_id}: state {self.state!r} -> {state!r} is not allowed "
                               f"(allowed from {self.state!r}: {shown})")
        self._meta.update(fields, state=state)
        if state == "running":
            self._meta.update(resumed=_now(), driver_pid=os.getpid(), driver_host=socket.gethostname())
        elif "ended" not in fields:
            self._meta["ended"] = _now()
        self.save()

    def note(self, **fields: Any) -> None:
        """Record facts (counts, tune_finished) without a state change."""
        if "state" in fields:
            raise StorageError("SweepRecord.note: change the state with move_to")
        self._meta.update(fields)
        self.save()


def driver_alive(meta: Mapping[str, Any]) -> bool | None:
    """Is the driver that sweep.json names still running? None when this machine cannot tell
    (it ran on another host, or sweep.json names no pid).

    A live process with the driver's pid that started after the driver last (re)started is a
    different process that reuses the pid, so the driver counts as gone.
    """
    pid = meta.get("driver_pid")
    host = meta.get("driver_host")
    if not isinstance(pid, int) or (host is not None and host != socket.gethostname()):
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, not yet reaped by its parent
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None  # e.g. access denied: it exists
    stamps = [t for t in (_timestamp(meta.get(k)) for k in ("started", "resumed")) if t is not None]
    if stamps and created > max(stamps) + 2.0:  # sweep.json times are whole seconds
        return False
    return True


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
