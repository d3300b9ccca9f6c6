"""Declared column roles of a sweep's results: ``<sweep folder>/schema.json``.

Every sweep writes one beside its ``results/`` (``sweeps.schema_file``)::

    {"format": "sage-sweeps column roles", "version": 1, "sweep_id": "...",
     "hyperparameters": [...],      every hyperparameter column of the rows (TrainConfig fields, variant)
     "varied": [...],               those the spec varies (its search dimensions)
     "metrics": {"concept_auc": "minimize", ...},  the metrics the spec names, direction from the registry
     "objectives": [...],           the spec's objectives, in order
     "bookkeeping": [...],          keys, status, timing, provenance columns
     "defaults": {"lambda_esp": 2.0, ...}}   the base config: the point every ablation holds the others at

:func:`analysis.connect` loads it (as the one-row table ``column_roles``), and ablation tables and
the report read roles from there instead of guessing hyperparameters by exclusion. A store without
the file (older sweeps, ``sage eval`` rows, a bare dataset) keeps the old inference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sage_core.defs.errors import StorageError

if TYPE_CHECKING:
    import duckdb

__all__ = ["ColumnRoles", "SCHEMA_FILE", "FORMAT", "read_schema_file", "install_roles", "roles_of"]

SCHEMA_FILE = "schema.json"
FORMAT = "sage-sweeps column roles"
MAX_BYTES = 1 << 20
_LISTS = ("hyperparameters", "varied", "objectives", "bookkeeping")


@dataclass(frozen=True)
class ColumnRoles:
    sweep_id: str
    hyperparameters: tuple[str, ...]
    varied: tuple[str, ...] = ()
    metrics: Mapping[str, str] = field(default_factory=dict)
    objectives: tuple[str, ...] = ()
    bookkeeping: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = {"format": FORMAT, "version": 1, "sweep_id": self.sweep_id,
               **{k: list(getattr(self, k)) for k in _LISTS}, "metrics": dict(self.metrics),
               "defaults": dict(self.defaults)}
        return json.dumps(doc, indent=1, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, where: str) -> ColumnRoles:
        """Parsed and checked (it is read from storage: untrusted); one-line errors naming ``where``."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StorageError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise StorageError(f"{where}: not a column-roles file (expected an object with format={FORMAT!r})")
        for key in _LISTS:
            value = doc.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise StorageError(f"{where}: {key}={value!r} is not allowed (allowed: a list of column names)")
        metrics, defaults = doc.get("metrics", {}), doc.get("defaults", {})
        if not isinstance(metrics, dict) or not all(isinstance(v, str) for v in metrics.values()):
            raise StorageError(f"{where}: metrics={metrics!r} is not allowed (allowed: an object of name -> direction)")
        if not isinstance(defaults, dict) or not all(_scalar(v) for v in defaults.values()):
            raise StorageError(f"{where}: defaults is not allowed (allowed: an object of column -> number, text, "
                             "true/false or null)")
        return cls(sweep_id=str(doc.get("sweep_id", "")), metrics=dict(metrics), defaults=dict(defaults),
                   **{k: tuple(doc.get(k, [])) for k in _LISTS})

    def numeric_defaults(self) -> dict[str, float]:
        """The base config's numbers: what an ablation holds the other hyperparameters at."""
        return {k: float(v) for k, v in self.defaults.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k in self.hyperparameters}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def read_schema_file(results_uri: str) -> ColumnRoles | None:
    """The roles of the sweep whose ``results/`` store is at ``results_uri`` (a path or URI);
    None when the store is not a sweep's ``results/`` or the sweep wrote no schema file."""
    root = results_uri.rstrip("/")
    parent, _, name = root.rpartition("/")
    if name != "results" or not parent:
        return None
    import fsspec.core  # lazy: fsspec, off `import analysis` and `sage` start-up

    path = f"{parent}/{SCHEMA_FILE}"
    try:
        fs, inner = fsspec.core.url_to_fs(path)
        if not fs.isfile(inner):
            return None
        if (fs.size(inner) or 0) > MAX_BYTES:
            raise StorageError(f"{path}: larger than {MAX_BYTES >> 20} MiB; not a file sage wrote")
        with fs.open(inner, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, ValueError, ImportError) as exc:  # UnicodeDecodeError is a ValueError
        raise StorageError(f"{path}: cannot be read ({exc})") from None
    return ColumnRoles.from_json(text, where=path)


def install_roles(con: duckdb.DuckDBPyConnection, roles: ColumnRoles | None) -> None:
    """The table ``column_roles`` (one row, the schema file's JSON) when there are roles."""
    if roles is None:
        return
    con.execute("CREATE TABLE column_roles (sweep_id VARCHAR, schema VARCHAR)")
    con.execute("INSERT INTO column_roles VALUES (?, ?)", [roles.sweep_id, roles.to_json()])


def roles_of(con: duckdb.DuckDBPyConnection) -> ColumnRoles | None:
    """The roles :func:`install_roles` put in this connection; None for a store without them (or a
    connection not made by :func:`analysis.connect`)."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    try:
        rows = con.sql("SELECT schema FROM column_roles").fetchall()
    except duckdb.CatalogException:  # no such table: the fallback
        return None
    return ColumnRoles.from_json(rows[0][0], where="column_roles") if rows else None
