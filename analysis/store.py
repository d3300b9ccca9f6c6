"""The results store: a Hive-partitioned Parquet dataset, one row per result key.

Layout: ``<root>/sweep_id=<id>/part-<time_ns>-<random>.parquet``. The ``sweep_id`` column lives
in the folder name only (Hive partitioning). Every :meth:`ResultStore.write` writes one file per
sweep under a temporary name (``_tmp-*.inprogress``, which no reader globs) and renames it into
place, so a reader never sees half a file.

Duplicates are impossible by key: file names sort in write order, and every read keeps, for each
key ``(sweep_id, trial_id, step, fidelity)``, the row of the newest file (last write wins). A
retried or resumed write of the same key therefore replaces the earlier row, and two files that
hold one key after a crash still show one row. :meth:`ResultStore.compact` merges a sweep's files
into one, named so that it sorts after every file it replaces and before any later write.

Roots: a local folder, a URI that pyarrow understands (``file://``, ``s3://``, ``gs://``, ...),
any fsspec URI (``memory://``), or a path plus an explicit ``pyarrow.fs.FileSystem``.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.rows import newest_write_sql
from analysis.store_schema import BadFile, check_row, row_table
from sage_core.defs.columns import KEY_COLUMNS
from sage_core.defs.errors import StorageError

__all__ = ["KEY_COLUMNS", "ResultStore"]

_PART_PREFIX = "sweep_id="
_TMP_PREFIX = "_tmp-"


def _publish(fs: pafs.FileSystem, tmp: str, final: str) -> None:
    """Rename ``tmp`` to ``final``: the one step that makes a written file visible."""
    fs.move(tmp, final)


def _filesystem_for(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in root:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))
    try:
        return pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec.core  # lazy: fsspec, off `import analysis` and `sage` start-up
    except ImportError as exc:  # pragma: no cover - fsspec is a dependency
        raise StorageError(f"root {root!r}: pyarrow does not know this scheme and fsspec is missing") from exc
    try:
        fs, path = fsspec.core.url_to_fs(root)
    except (ImportError, ValueError) as exc:
        raise StorageError(
            f"root {root!r}: no filesystem for this URI ({exc}); use a local folder, file://, s3://, "
            "gs://, memory:// or pass filesystem=pyarrow.fs.FileSystem"
        ) from exc
    # pyarrow-stubs declare FSSpecHandler's FileSystemHandler methods abstract; pyarrow implements them
    handler = pafs.FSSpecHandler(fs)  # type: ignore[abstract]
    return pafs.PyFileSystem(handler), path.rstrip("/") or "/"


class ResultStore:
    """Append-only, atomic, deduplicated Parquet results (see the module docstring).

    >>> store = ResultStore("runs/demo/results")          # or "s3://bucket/prefix", "memory://x"
    >>> store.write([{"sweep_id": "s1", "trial_id": "t0", "step": 10, "fidelity": "text",
    ...               "asr_text": 0.1, "util_text": 0.9}])
    1
    """

    def __init__(self, root: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None) -> None:
        root = os.fspath(root)
        if filesystem is None:
            self.filesystem, self.path = _filesystem_for(root)
        else:
            if not isinstance(filesystem, pafs.FileSystem):
                raise StorageError(
                    f"filesystem: expected a pyarrow.fs.FileSystem, got {type(filesystem).__name__} "
                    "(wrap fsspec filesystems with pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)))"
                )
            self.filesystem, self.path = filesystem, root.rstrip("/") or "/"
        self.uri = root
        self.skipped: list[BadFile] = []

    def __repr__(self) -> str:
        return f"ResultStore({self.uri!r}, filesystem={type(self.filesystem).__name__})"

    @property
    def local_path(self) -> Path | None:
        """The root as a local path when the filesystem is the local one (DuckDB reads it directly)."""
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            return Path(self.path)
        return None

    # ------------------------------------------------------------------ writing
    def write(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Write ``rows`` as one atomic file per sweep; returns the number of rows written.

        Rows with the same key within one call collapse to the last one; a key written before is
        replaced (last write wins), never duplicated.
        """
        rows = list(rows)
        by_key: dict[tuple[str, str, int, str], Mapping[str, Any]] = {}
        for i, row in enumerate(rows):
            key = check_row(i, row)
            by_key.pop(key, None)
            by_key[key] = row
        by_sweep: dict[str, list[Mapping[str, Any]]] = {}
        for key, row in by_key.items():
            by_sweep.setdefault(key[0], []).append(row)
        for sweep_id, sweep_rows in by_sweep.items():
            table = row_table(sweep_rows).drop_columns(["sweep_id"])
            self._write_file(sweep_id, table, name=self._new_name())
        return len(by_key)

    @staticmethod
    def _new_name(time_ns: int | None = None, *, compacted: bool = False) -> str:
        ns = time.time_ns() if time_ns is None else time_ns
        tag = ("z" if compacted else "") + uuid.uuid4().hex[:12]
        return f"part-{ns:020d}-{tag}.parquet"

    def _partition(self, sweep_id: str) -> str:
        return f"{self.path}/{_PART_PREFIX}{sweep_id}"

    def _write_file(self, sweep_id: str, table: pa.Table, *, name: str) -> str:
        folder = self._partition(sweep_id)
        try:
            self.filesystem.create_dir(folder, recursive=True)
            tmp = f"{folder}/{_TMP_PREFIX}{uuid.uuid4().hex}.inprogress"
            pq.write_table(table, tmp, filesystem=self.filesystem, compression="zstd")
            final = f"{folder}/{name}"
            _publish(self.filesystem, tmp, final)
        except OSError as exc:
            raise StorageError(f"cannot write results under {folder!r}: {exc}") from exc
        return final

    # ------------------------------------------------------------------ reading
    def sweep_ids(self) -> list[str]:
        """The sweeps present in the dataset (partition folder names)."""
        try:
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except OSError as exc:
            raise StorageError(f"cannot list {self.uri!r}: {exc}") from exc
        return sorted(
            i.base_name[len(_PART_PREFIX):]
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith(_PART_PREFIX)
        )

    def files(self, sweep_id: str | None = None) -> list[str]:
        """Visible Parquet files (temporary files excluded), sorted by sweep then write order."""
        sweeps = [sweep_id] if sweep_id is not None else self.sweep_ids()
        out: list[str] = []
        for sid in sweeps:
            infos = self.filesystem.get_file_info(pafs.FileSelector(self._partition(sid), allow_not_found=True))
            out.extend(
                sorted(
                    i.path
                    for i in infos
                    if i.type == pafs.FileType.File
                    and i.base_name.endswith(".parquet")
                    and not i.base_name.startswith(_TMP_PREFIX)
                )
            )
        return out

    def check_files(self, files: Sequence[str] | None = None) -> tuple[list[str], list[BadFile]]:
        """Split files into readable results files and bad ones (corrupt, or foreign: no key columns)."""
        good: list[str] = []
        bad: list[BadFile] = []
        for path in self.files() if files is None else files:
            outside = self._escapes(path)
            if outside:
                bad.append(outside)
                continue
            try:
                schema = pq.read_schema(path, filesystem=self.filesystem)
            except (OSError, pa.ArrowException) as exc:
                bad.append(BadFile.unreadable(path, exc))
                continue
            problem = BadFile.check(path, schema)
            if problem:
                bad.append(problem)
            else:
                good.append(path)
        return good, bad

    def _escapes(self, path: str) -> BadFile | None:
        """A local file that resolves outside the store (a symlink out of it) is never read."""
        if self.local_path is None:
            return None
        root = os.path.realpath(self.path)
        real = os.path.realpath(path)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return None
        return BadFile(path, f"a link that leaves the store (it resolves to {real}); results files live inside it")

    def report_bad(self, bad: Sequence[BadFile], *, skip_bad: bool) -> None:
        """Raise for bad files, or (``skip_bad=True``) warn and remember them in ``self.skipped``."""
        if not bad:
            return
        listing = "; ".join(str(b) for b in bad)
        if not skip_bad:
            raise StorageError(
                f"{len(bad)} bad file(s) in results store {self.uri!r}: {listing}. Move them away, or "
                "pass skip_bad=True (CLI: --skip-bad) to read the rest"
            )
        self.skipped = list(bad)
        warnings.warn(f"skipped {len(bad)} bad file(s) in {self.uri!r}: {listing}", stacklevel=3)

    def _read_files(self, files: Sequence[str], *, skip_bad: bool) -> pa.Table | None:
        tables: list[pa.Table] = []
        bad: list[BadFile] = []
        for path in files:
            outside = self._escapes(path)
            if outside:
                bad.append(outside)
                continue
            try:
                t = pq.read_table(path, filesystem=self.filesystem)
            except FileNotFoundError:
                continue  # compacted away between listing and reading; its rows live in the merged file
            except (OSError, pa.ArrowException) as exc:
                bad.append(BadFile.unreadable(path, exc))
                continue
            problem = BadFile.check(path, t.schema)
            if problem:
                bad.append(problem)
                continue
            folder, _, name = path.rpartition("/")
            sweep_id = folder.rpartition("/")[2][len(_PART_PREFIX):]
            if "sweep_id" in t.column_names:
                t = t.drop_columns(["sweep_id"])
            t = t.append_column("sweep_id", pa.array([sweep_id] * len(t), pa.string()))
            t = t.append_column("_file", pa.array([name] * len(t), pa.string()))
            tables.append(t)
        self.report_bad(bad, skip_bad=skip_bad)
        if not tables:
            return None
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except pa.ArrowException as exc:
            raise StorageError(f"results files in {self.uri!r} disagree on column types: {exc}") from exc

    def read(self, *, sweep_id: str | None = None, skip_bad: bool = False) -> pa.Table:
        """All rows, one per key (the newest write wins), sorted by key.

        A corrupt or foreign Parquet file raises :class:`StorageError` naming it, unless
        ``skip_bad=True``: then it is skipped with a warning and listed in ``self.skipped``.
        """
        table = self._read_files(self.files(sweep_id), skip_bad=skip_bad)
        if table is None:
            return pa.table(
                {"sweep_id": pa.array([], pa.string()), "trial_id": pa.array([], pa.string()),
                 "step": pa.array([], pa.int64()), "fidelity": pa.array([], pa.string())}
            )
        return _dedup(table)

    # ------------------------------------------------------------------ maintenance
    def compact(self, sweep_id: str | None = None, *, skip_bad: bool = False, stale_tmp_s: float = 3600.0) -> int:
        """Merge each sweep's files into one file atomically; returns the number of files removed.

        The merged file is renamed into place before its inputs are deleted, so readers see every
        row at every moment (for an instant twice, which the key deduplication hides). Temporary
        files older than ``stale_tmp_s`` (left by crashed writers) are deleted too.
        """
        removed = 0
        for sid in [sweep_id] if sweep_id is not None else self.sweep_ids():
            removed += self._clean_tmp(sid, stale_tmp_s=stale_tmp_s)
            files = self.files(sid)
            good, bad = self.check_files(files)
            self.report_bad(bad, skip_bad=skip_bad)
            if len(good) < 2:
                continue
            table = self._read_files(good, skip_bad=skip_bad)
            if table is None:
                continue
            merged = _dedup(table).drop_columns(["sweep_id"])
            newest_ns = max(int(Path(p).name.split("-")[1]) for p in good)
            self._write_file(sid, merged, name=self._new_name(newest_ns, compacted=True))
            for path in good:
                try:
                    self.filesystem.delete_file(path)
                except FileNotFoundError:
                    continue
                removed += 1
        return removed

    def _clean_tmp(self, sweep_id: str, *, stale_tmp_s: float) -> int:
        infos = self.filesystem.get_file_info(pafs.FileSelector(self._partition(sweep_id), allow_not_found=True))
        now = time.time()
        n = 0
        for i in infos:
            if i.type != pafs.FileType.File or not i.base_name.startswith(_TMP_PREFIX):
                continue
            mtime = i.mtime.timestamp() if i.mtime is not None else 0.0
            if now - mtime >= stale_tmp_s:
                self.filesystem.delete_file(i.path)
                n += 1
        return n


def _dedup(table: pa.Table) -> pa.Table:
    """Keep the row of the newest file per key; drop the helper ``_file`` column."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    con = duckdb.connect()
    try:
        con.register("_rows", table)
        order = ", ".join(KEY_COLUMNS)
        return con.sql(f"{newest_write_sql('_rows', keys=KEY_COLUMNS)} ORDER BY {order}").to_arrow_table()
    finally:
        con.close()
