"""What the results store holds: the type of every column, the rules a row must follow, and why
a Parquet file is not a results file.

:class:`analysis.store.ResultStore` writes what :func:`row_table` builds from checked rows
(:func:`check_row`) and reads only files that :meth:`BadFile.check` accepts, so files written at
different times always agree on a column's type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sage_core.defs.columns import KEY_COLUMNS
from sage_core.defs.errors import StorageError
from sage_core.defs.metrics import is_metric

__all__ = [
    "FIDELITIES",
    "STATUSES",
    "INT_COLUMNS",
    "STRING_COLUMNS",
    "SWEEP_ID",
    "BadFile",
    "check_row",
    "row_table",
]

FIDELITIES: tuple[str, ...] = ("text", "image")
STATUSES: tuple[str, ...] = ("running", "finished", "pruned", "failed")
# Columns whose type is fixed whatever the values look like, so files always agree.
INT_COLUMNS: frozenset[str] = frozenset({"step", "local_k", "seed", "epochs", "batch_size", "epoch"})
STRING_COLUMNS: frozenset[str] = frozenset(
    {"sweep_id", "trial_id", "fidelity", "method", "status", "code_version", "checkpoint", "preset"}
)
SWEEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_COLUMN = re.compile(r"^[^\x00-\x1f\x7f\"]{1,128}$")
_RESERVED = frozenset({"_file", "filename"})


@dataclass(frozen=True)
class BadFile:
    """A Parquet file in the dataset that cannot be read as results, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"

    @classmethod
    def unreadable(cls, path: str, exc: BaseException) -> BadFile:
        return cls(path, f"not readable as Parquet: {str(exc).splitlines()[0][:160]}")

    @classmethod
    def if_foreign(cls, path: str, columns: Sequence[str]) -> BadFile | None:
        """A file without the key columns is not a results file (None when it has them)."""
        missing = [k for k in KEY_COLUMNS[1:] if k not in columns]
        return cls(path, f"foreign Parquet file: no column(s) {missing}") if missing else None

    @classmethod
    def if_mistyped(cls, path: str, schema: pa.Schema) -> BadFile | None:
        """A file whose columns do not have the store's types (e.g. ``step`` as text) is bad:
        read beside good files it would turn their numbers into text."""
        for field in schema:
            kind = _kind(field.type)
            allowed = _allowed_kinds(field.name)
            if kind not in allowed:
                return cls(path, f"column {field.name!r} holds {field.type}, the store holds "
                                 f"{' or '.join(sorted(allowed - {'null'}))} there")
        return None

    @classmethod
    def check(cls, path: str, schema: pa.Schema) -> BadFile | None:
        """The first reason ``path`` (with this schema) is not a results file, or None."""
        return cls.if_foreign(path, schema.names) or cls.if_mistyped(path, schema)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return "text"
    return str(t)


def _allowed_kinds(name: str) -> frozenset[str]:
    """The store schema: what each column may hold (``null``: a column with no value yet)."""
    if name in ("trial_id", "fidelity"):
        return frozenset({"text"})
    if name == "step":
        return frozenset({"integer"})
    if name in STRING_COLUMNS:
        return frozenset({"text", "null"})
    if name in INT_COLUMNS:
        return frozenset({"integer", "null"})
    if is_metric(name):
        return frozenset({"float", "integer", "null"})
    return frozenset({"text", "float", "integer", "bool", "null"})



def _plain(value: Any) -> Any:
    """numpy scalars and similar become Python scalars; NaN stays NaN."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return value


def _column_array(name: str, values: list[Any]) -> pa.Array:
    """Type one column: fixed types for known columns, int->float for numbers, else error."""
    present = [v for v in values if v is not None]
    if not present and name not in STRING_COLUMNS and name not in INT_COLUMNS and not is_metric(name):
        # Type unknown yet: a null column merges with whatever a later file holds (text or number).
        return pa.nulls(len(values), type=pa.null())
    if name in STRING_COLUMNS:
        bad = [v for v in present if not isinstance(v, str)]
        if bad:
            raise StorageError(f"column {name!r}: value {bad[0]!r} is not a string (this column holds text)")
        return pa.array(values, type=pa.string())
    if any(isinstance(v, str) for v in present):
        if all(isinstance(v, str) for v in present):
            return pa.array(values, type=pa.string())
        raise StorageError(
            f"column {name!r}: mixes text and numbers ({present[:3]!r}); one column holds one kind of value"
        )
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.bool_())
    for v in present:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise StorageError(
                f"column {name!r}: value {v!r} of type {type(v).__name__} is not allowed "
                "(allowed: str, int, float, bool, None)"
            )
    if name in INT_COLUMNS:
        out: list[int | None] = []
        for v in values:
            if v is None:
                out.append(None)
            elif isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                raise StorageError(f"column {name!r}: value {v!r} is not a whole number (this column holds integers)")
            else:
                out.append(int(v))
        return pa.array(out, type=pa.int64())
    # Every other number is float64, so a value written as 2 in one file and 2.5 in another agrees.
    return pa.array([None if v is None else float(v) for v in values], type=pa.float64())


def check_row(i: int, row: Mapping[str, Any]) -> tuple[str, str, int, str]:
    if not isinstance(row, Mapping):
        raise StorageError(f"row {i}: expected a dict, got {type(row).__name__}")
    missing = [k for k in KEY_COLUMNS if row.get(k) is None]
    if missing:
        raise StorageError(f"row {i}: missing key column(s) {missing}; every row needs {list(KEY_COLUMNS)}")
    sweep_id, trial_id, step, fidelity = (_plain(row[k]) for k in KEY_COLUMNS)
    if not isinstance(sweep_id, str) or not SWEEP_ID.match(sweep_id):
        raise StorageError(
            f"row {i}: sweep_id {sweep_id!r} is not allowed (allowed: letters, digits, '.', '_', '-', "
            "starting with a letter or digit, at most 200 characters)"
        )
    if not isinstance(trial_id, str) or not trial_id:
        raise StorageError(f"row {i}: trial_id {trial_id!r} must be a non-empty string")
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise StorageError(f"row {i}: step {step!r} must be a whole number >= 0")
    if fidelity not in FIDELITIES:
        raise StorageError(f"row {i}: fidelity {fidelity!r} is not allowed (allowed: {', '.join(FIDELITIES)})")
    status = row.get("status")
    if status is not None and status not in STATUSES:
        raise StorageError(f"row {i}: status {status!r} is not allowed (allowed: {', '.join(STATUSES)})")
    for name in row:
        if not isinstance(name, str) or not _COLUMN.match(name) or name in _RESERVED:
            raise StorageError(
                f"row {i}: column name {name!r} is not allowed (allowed: 1-128 printable characters "
                f"without '\"'; reserved: {', '.join(sorted(_RESERVED))})"
            )
    return sweep_id, trial_id, step, fidelity


def row_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Typed Arrow table of ``rows`` (all columns, ``sweep_id`` included), keys validated."""
    columns: dict[str, None] = {}
    folded: dict[str, str] = {}
    for i, row in enumerate(rows):
        check_row(i, row)
        for name in row:
            other = folded.setdefault(name.lower(), name)
            if other != name:  # DuckDB column names ignore case: these two would collide
                raise StorageError(f"row {i}: columns {other!r} and {name!r} differ only in case; rename one")
            columns.setdefault(name, None)
    arrays = {name: _column_array(name, [_plain(r.get(name)) for r in rows]) for name in columns}
    return pa.table(arrays)
