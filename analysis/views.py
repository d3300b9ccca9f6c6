"""DuckDB views over the results store: ``results`` (measured, one row per key), ``reported`` and
``calibration`` (:mod:`analysis.calibration`).

``results`` holds the rows of the store's checked files (Hive partitioning: ``sweep_id`` from the
folder name, always text; ``union_by_name``: files may hold different metric columns) and keeps the
row of the newest file per key, so it never shows two rows with one key. The rows are loaded at
:func:`connect` (a snapshot), by DuckDB on a local folder and through pyarrow on other
filesystems; then the connection is sandboxed (:mod:`analysis.sandbox`).

``reported`` holds the paper's rows (``analysis/data/reported.csv``) with ``source = 'reported'``;
``column_roles`` the sweep's declared column roles when its folder has a ``schema.json``
(:mod:`analysis.column_roles`).
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv

from analysis.calibration import create_view
from analysis.column_roles import install_roles, read_schema_file
from analysis.rows import newest_write_sql
from analysis.sandbox import Limits, lock_down, open_sandbox
from analysis.store import KEY_COLUMNS, ResultStore
from sage_core.defs.errors import QueryError, StorageError, unknown_name
from sage_core.defs.metrics import DEFAULT_PAIRS

if TYPE_CHECKING:
    import duckdb

__all__ = ["connect", "locate", "reported_table", "columns_of", "require_columns", "default_objectives", "Source"]

Source = Any  # a path, URI, ResultStore, or duckdb connection made by connect()


def locate(root: str | os.PathLike[str] | ResultStore) -> ResultStore:
    """A :class:`ResultStore` for ``root``: the dataset root itself, or a sweep/storage folder
    that contains ``results/`` (as written by ``sage sweep run --storage DIR``)."""
    if isinstance(root, ResultStore):
        return root
    text = os.fspath(root)
    if "://" not in text:
        path = Path(text).expanduser()
        if not path.exists():
            raise QueryError(f"results path {text!r} does not exist (pass the dataset root or a sweep folder)")
        has_partitions = any(p.name.startswith("sweep_id=") for p in path.iterdir()) if path.is_dir() else False
        if not has_partitions and (path / "results").is_dir():
            return ResultStore(path / "results")
    return ResultStore(text)


def reported_table() -> pa.Table:
    """The paper's reported rows as an Arrow table, labelled ``source='reported'``, ``fidelity='image'``."""
    data = resources.files("analysis").joinpath("data/reported.csv").read_bytes()
    table = pacsv.read_csv(io.BytesIO(data))
    n = len(table)
    table = table.append_column("source", pa.array(["reported"] * n, pa.string()))
    return table.append_column("fidelity", pa.array(["image"] * n, pa.string()))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(
    root: str | os.PathLike[str] | ResultStore, *, skip_bad: bool = False, limits: Limits | None = None
) -> duckdb.DuckDBPyConnection:
    """A sandboxed in-memory DuckDB connection with the views ``results`` and ``reported``.

    The store's files are checked (readable, key columns, the store's column types, inside the
    store) and their rows loaded into memory; then the connection is locked down
    (:mod:`analysis.sandbox`): no file or network access, no extensions, bounded memory and
    threads, settings locked. It is a snapshot: files written later need a new connection.

    A bad file raises :class:`sage_core.defs.errors.StorageError` naming it, unless ``skip_bad=True``
    (then it is skipped with a warning and the good files still answer).
    """
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    store = locate(root)
    roles = _roles(store)  # a damaged schema file is refused before anything loads
    con = open_sandbox(limits)
    try:
        _load(con, store, skip_bad=skip_bad)
        install_roles(con, roles)  # the table ``column_roles`` (analysis.column_roles)
    except duckdb.Error as exc:
        con.close()
        raise StorageError(f"cannot load results store {store.uri!r}: {str(exc).strip().splitlines()[0]}") from None
    except BaseException:
        con.close()
        raise
    lock_down(con)
    return con


def _roles(store: ResultStore):
    """The declared column roles beside a sweep's ``results/`` (local folder or URI), else None."""
    if store.local_path is not None:
        return read_schema_file(str(store.local_path))
    return read_schema_file(store.uri) if "://" in store.uri else None


def _load(con: duckdb.DuckDBPyConnection, store: ResultStore, *, skip_bad: bool) -> None:
    con.register("_reported_arrow", reported_table())
    con.execute("CREATE TABLE _reported_rows AS SELECT * FROM _reported_arrow")
    con.unregister("_reported_arrow")
    con.execute("CREATE VIEW reported AS SELECT * FROM _reported_rows")

    create_view(con, store, skip_bad=skip_bad)  # the view ``calibration``: text proxies vs image metrics
    keys = ", ".join(KEY_COLUMNS)
    loaded = False
    if store.local_path is not None:
        good, bad = store.check_files()
        store.report_bad(bad, skip_bad=skip_bad)
        if good:
            # Only the files just checked: never a glob (it would also match files being written).
            files = "[" + ", ".join(_sql_str(f) for f in good) + "]"
            con.execute(
                f"CREATE TABLE _results_rows AS SELECT * FROM read_parquet({files}, hive_partitioning = true, "
                "union_by_name = true, filename = '_file', hive_types = {'sweep_id': 'VARCHAR'})"
            )
            loaded = True
    else:
        table = store.read(skip_bad=skip_bad)
        if len(table):
            table = table.append_column("_file", pa.array([""] * len(table), pa.string()))
            con.register("_results_arrow", table)
            con.execute("CREATE TABLE _results_rows AS SELECT * FROM _results_arrow")
            con.unregister("_results_arrow")
            loaded = True
    if not loaded:
        con.execute(
            "CREATE VIEW results AS SELECT * FROM (VALUES (NULL::VARCHAR, NULL::VARCHAR, NULL::BIGINT, "
            f"NULL::VARCHAR)) AS t({keys}) WHERE false"
        )
    else:
        con.execute(f"CREATE VIEW results AS {newest_write_sql('_results_rows', keys=KEY_COLUMNS)}")


def open_source(
    source: Source, *, skip_bad: bool = False, limits: Limits | None = None
) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """``(connection, owned)``: reuse the caller's connection (theirs, as they configured it), or
    open a sandboxed one on a path/URI/store (owned=True)."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    if isinstance(source, duckdb.DuckDBPyConnection):
        return source, False
    return connect(source, skip_bad=skip_bad, limits=limits), True


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Column names of a table or view (``DESCRIBE``)."""
    try:
        rows = con.sql(f"DESCRIBE {table}").fetchall()
    except Exception as exc:  # duckdb raises its own hierarchy; report it as ours
        raise QueryError(f"cannot read table {table!r}: {str(exc).splitlines()[0]}") from exc
    return [r[0] for r in rows]


def require_columns(names: list[str], *, available: list[str], kind: str = "column") -> None:
    """Raise with "did you mean" for the first name not in ``available``."""
    for name in names:
        if name not in available:
            raise unknown_name(kind=kind, name=name, known=available)


def default_objectives(con: duckdb.DuckDBPyConnection, fidelity: str | None = None) -> tuple[str, str]:
    """The registry's default objective pair of ``fidelity``; without one, the first pair (image level
    first: it is the truth when measured) that some row of ``results`` holds both of."""
    if fidelity is not None:
        if fidelity not in DEFAULT_PAIRS:
            raise QueryError(f"--fidelity {fidelity!r} is not allowed (allowed: {', '.join(DEFAULT_PAIRS)})")
        return DEFAULT_PAIRS[fidelity]
    cols = columns_of(con, "results")
    for x, y in DEFAULT_PAIRS.values():
        if x in cols and y in cols:
            n = con.sql(f'SELECT count(*) FROM results WHERE "{x}" IS NOT NULL AND "{y}" IS NOT NULL').fetchall()[0][0]
            if n:
                return x, y
    return DEFAULT_PAIRS["image"]
