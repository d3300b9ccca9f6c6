"""DuckDB views over the results store: ``results`` (measured, one row per key) and ``reported``.

``results`` reads the Parquet files with a glob, Hive partitioning (``sweep_id`` from the folder
name, always text) and ``union_by_name`` (files may hold different metric columns), and keeps the
row of the newest file per key, so it never shows two rows with one key. On a local folder the
glob is expanded at each query, so the view sees files written after :func:`connect`. Other
filesystems are read through pyarrow once, at :func:`connect`.

``reported`` holds the paper's rows (``analysis/data/reported.csv``) with ``source = 'reported'``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.errors import QueryError
from analysis.names import unknown_name
from analysis.store import KEY_COLUMNS, ResultStore

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["connect", "locate", "reported_table", "columns_of", "require_columns", "Source"]

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
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = resources.files("analysis").joinpath("data/reported.csv").read_bytes()
    table = pacsv.read_csv(pa.BufferReader(data))
    n = len(table)
    table = table.append_column("source", pa.array(["reported"] * n, pa.string()))
    return table.append_column("fidelity", pa.array(["image"] * n, pa.string()))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(root: str | os.PathLike[str] | ResultStore, *, skip_bad: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views ``results`` and ``reported``.

    A corrupt or foreign Parquet file raises :class:`analysis.errors.StoreError` naming it, unless
    ``skip_bad=True`` (then it is skipped with a warning; the view covers the files found now).
    """
    import duckdb

    store = locate(root)
    con = duckdb.connect(":memory:")
    con.register("_reported_rows", reported_table())
    con.sql("CREATE VIEW reported AS SELECT * FROM _reported_rows")
    keys = ", ".join(KEY_COLUMNS)
    local = store.local_path
    if local is not None:
        good, bad = store.check_files()
        store.report_bad(bad, skip_bad=skip_bad)
        if not good:
            src = None
        else:
            files = _sql_str(f"{local.as_posix()}/sweep_id=*/*.parquet") if not bad else (
                "[" + ", ".join(_sql_str(f) for f in good) + "]"
            )
            src = (
                f"read_parquet({files}, hive_partitioning = true, union_by_name = true, "
                "filename = '_file', hive_types = {'sweep_id': 'VARCHAR'})"
            )
    else:
        table = store.read(skip_bad=skip_bad)
        if len(table):
            import pyarrow as pa

            table = table.append_column("_file", pa.array([""] * len(table), pa.string()))
            con.register("_results_rows", table)
            src = "_results_rows"
        else:
            src = None
    if src is None:
        con.sql(
            "CREATE VIEW results AS SELECT * FROM (VALUES (NULL::VARCHAR, NULL::VARCHAR, NULL::BIGINT, "
            f"NULL::VARCHAR)) AS t({keys}) WHERE false"
        )
    else:
        # _file names sort in write order within a sweep folder: the newest file wins a key.
        con.sql(
            f"CREATE VIEW results AS SELECT {keys}, * EXCLUDE ({keys}, _file) FROM {src} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _file DESC) = 1"
        )
    return con


def open_source(source: Source, *, skip_bad: bool = False) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """``(connection, owned)``: reuse a connection, or connect to a path/URI/store (owned=True)."""
    import duckdb

    if isinstance(source, duckdb.DuckDBPyConnection):
        return source, False
    return connect(source, skip_bad=skip_bad), True


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
