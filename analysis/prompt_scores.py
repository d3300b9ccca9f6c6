"""The per-prompt score table: one small Parquet file per text evaluation, beside a sweep's results.

The results store keeps one number per objective and evaluation; a paired comparison of two
trials (:mod:`analysis.paired_compare`) needs the scores per prompt. A sweep writes them here::

    <sweep folder>/prompt_scores/sweep_id=<id>/trial_id=<trial>/step=<step, 8 digits>.parquet

written by the trial right after its evaluation under a temporary name and renamed into place (a
reader never sees half a file; a retried step writes the same name again, last write wins).

Schema, one row per score (``sage_core.evaluation.prompt_scores`` says what the evaluator records):

=========  =======  ==========================================================================
column     type     meaning
=========  =======  ==========================================================================
metric     string   the objective (``concept_auc``, ``util_sib``, ...)
part       string   what the objective averages over (an attack set, a TIFA category)
side       string   ``pos`` / ``neg`` (the two sides of an AUC part) or ``value`` (a mean part)
pool       string   the prompts resampled together; ``pool`` + ``index`` is one prompt in every trial
index      int64    position in the pool
score      double   the score (probe score, per-group utility value)
=========  =======  ==========================================================================

The objective's value is the mean over its parts of AUC(pos, neg) (P(pos > neg) + P(tie) / 2) or
of the mean of the values. The file's schema metadata ``sage_prompt_scores`` (JSON) holds
``{"version": 1, "pools": {name: {"n": items, "fingerprint": "sha256:..."}}}``: trials whose pools
differ were not evaluated on the same prompts and are never paired.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.store import _filesystem_for  # the store's one resolution of paths and URIs
from sage_core.defs.errors import StorageError

__all__ = ["FOLDER", "METADATA_KEY", "ScoreTable", "scores_root_for", "write_prompt_scores", "read_prompt_scores"]

FOLDER = "prompt_scores"
METADATA_KEY = b"sage_prompt_scores"
MAX_BYTES = 64 << 20
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_COLUMNS = {"metric": "string", "part": "string", "side": "string", "pool": "string", "index": "int64",
            "score": "double"}
_SIDES = frozenset({"pos", "neg", "value"})


@dataclass(frozen=True)
class ScoreTable:
    """One evaluation's scores: ``columns`` as numpy arrays (the schema above) and its ``pools``."""

    columns: Mapping[str, np.ndarray]
    pools: Mapping[str, Mapping[str, Any]]

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.columns["metric"].tolist()))


def scores_root_for(results_uri: str) -> str | None:
    """The per-prompt score folder of the sweep whose ``results/`` store is at ``results_uri``;
    None when the store is not a sweep's ``results/`` (a bare dataset keeps no scores)."""
    parent, _, name = str(results_uri).rstrip("/").rpartition("/")
    return f"{parent}/{FOLDER}" if name == "results" and parent else None


def _path(root: str, *, sweep_id: str, trial_id: str, step: int) -> str:
    for what, value in (("sweep_id", sweep_id), ("trial_id", trial_id)):
        if not isinstance(value, str) or not _ID.match(value) or ".." in value:
            raise StorageError(f"{what} {value!r} is not allowed in a prompt-score path (allowed: letters, digits, "
                             "'.', '_', '+', '-', at most 200 characters)")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise StorageError(f"step {step!r} must be a whole number >= 0")
    return f"{root.rstrip('/')}/sweep_id={sweep_id}/trial_id={trial_id}/step={int(step):08d}.parquet"


def _filesystem(root: str):
    return _filesystem_for(root)


def write_prompt_scores(root: str, *, sweep_id: str, trial_id: str, step: int, columns: Mapping[str, Any],
                        pools: Mapping[str, Mapping[str, Any]], metrics: Collection[str] | None = None) -> str:
    """Write one evaluation's scores atomically (temporary name, then rename); returns the path.
    ``metrics``: keep only these objectives' rows (and their pools)."""
    fs, base = _filesystem(root)
    final = _path(base, sweep_id=sweep_id, trial_id=trial_id, step=step)
    if metrics is not None:
        keep = np.isin(np.asarray(columns["metric"], dtype=object), list(metrics))
        columns = {k: np.asarray(v)[keep] for k, v in columns.items()}
        pools = {k: v for k, v in pools.items() if k in set(np.asarray(columns["pool"]).tolist())}
    meta = json.dumps({"version": 1, "pools": {k: {"n": int(v["n"]), "fingerprint": str(v["fingerprint"])}
                                               for k, v in pools.items()}})
    types = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64()}
    table = pa.table({name: pa.array(np.asarray(columns[name]).tolist() if kind == "string" else columns[name],
                                     type=types[kind]) for name, kind in _COLUMNS.items()})
    table = table.replace_schema_metadata({METADATA_KEY: meta.encode()})
    folder = final.rpartition("/")[0]
    tmp = f"{folder}/_tmp-{uuid.uuid4().hex}.inprogress"
    try:
        fs.create_dir(folder, recursive=True)
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        fs.move(tmp, final)
    except OSError as exc:
        raise StorageError(f"cannot write prompt scores {final!r}: {exc}") from None
    return final


def read_prompt_scores(root: str, *, sweep_id: str, trial_id: str, step: int) -> ScoreTable | None:
    """One evaluation's scores, checked (the folder is storage: untrusted); None when not written
    (also for ids no prompt-score path can hold, e.g. rows that a sweep did not write)."""
    fs, base = _filesystem(root)
    try:
        path = _path(base, sweep_id=sweep_id, trial_id=trial_id, step=step)
    except StorageError:
        return None
    try:
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            return None
        if (info.size or 0) > MAX_BYTES:
            raise StorageError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a prompt-score file sage wrote")
        table = pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"{path}: cannot be read as prompt scores ({str(exc).splitlines()[0][:160]})") from None
    return _checked(table, path=path)


def _checked(table, *, path: str) -> ScoreTable:
    types = {f.name: str(f.type) for f in table.schema}
    for name, kind in _COLUMNS.items():
        if types.get(name) not in (kind, "large_string" if kind == "string" else kind):
            raise StorageError(f"{path}: column {name!r} is {types.get(name, 'missing')}, expected {kind}")
    try:
        meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
        pools = {str(k): {"n": int(v["n"]), "fingerprint": str(v["fingerprint"])} for k, v in meta["pools"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StorageError(f"{path}: no valid {METADATA_KEY.decode()} metadata (pools and their fingerprints)"
                           ) from None
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in _COLUMNS}
    sides = set(cols["side"].tolist())
    if not sides <= _SIDES:
        raise StorageError(f"{path}: side values {sorted(sides - _SIDES)} are not allowed (allowed: pos, neg, value)")
    for pool in set(cols["pool"].tolist()):
        idx = cols["index"][cols["pool"] == pool]
        if pool not in pools or idx.min() < 0 or idx.max() >= pools[pool]["n"]:
            raise StorageError(f"{path}: pool {pool!r} is not described in the metadata, or an index is outside it")
    if cols["score"].size and not np.isfinite(cols["score"]).all():
        raise StorageError(f"{path}: scores must be finite numbers")
    return ScoreTable(columns=cols, pools=pools)
