"""Read-only SQL over the ``results`` and ``reported`` views (what ``sage sql`` runs).

Two guards: DuckDB's own parser must find exactly one statement, of type SELECT (``WITH``,
``FROM``-first, ``DESCRIBE``, ``SHOW`` and ``SUMMARIZE`` parse as SELECT); then the connection's
configuration is locked, so even a statement that slipped through could not ``SET`` its way to
more (extensions cannot be installed or loaded, settings cannot change). DuckDB has no SELECT
that writes files: writing needs ``COPY``/``EXPORT``, which the first guard refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.errors import QueryError
from analysis.views import Source, open_source

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_readonly", "readonly_query"]


def check_readonly(query: str) -> None:
    """Raise :class:`QueryError` unless ``query`` is one SELECT/WITH statement."""
    import duckdb

    if not query or not query.strip():
        raise QueryError("empty query; pass one SELECT statement, e.g. \"SELECT count(*) FROM results\"")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise QueryError(
            f"only one statement may run, got {len(statements)}; remove the extra ';'-separated statements"
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = str(kind).rsplit(".", 1)[-1]
        raise QueryError(
            f"refused a {name} statement: `sage sql` is read-only and runs only SELECT/WITH queries "
            "over the views results and reported"
        )


def readonly_query(source: Source, query: str, *, skip_bad: bool = False, limit: int | None = None) -> pd.DataFrame:
    """Run one read-only SELECT over ``source``'s views and return the rows (at most ``limit``)."""
    import duckdb

    check_readonly(query)
    con, owned = open_source(source, skip_bad=skip_bad)
    try:
        if owned:
            con.sql("SET autoinstall_known_extensions = false")
            con.sql("SET autoload_known_extensions = false")
            con.sql("SET lock_configuration = true")
        rel = con.sql(query)
        if rel is None:  # pragma: no cover - a SELECT always yields a relation
            raise QueryError("the query returned no result set")
        if limit is not None:
            rel = rel.limit(limit)
        return rel.df()
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {str(exc).splitlines()[0]}") from exc
    finally:
        if owned:
            con.close()
