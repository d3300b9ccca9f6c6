"""Read-only SQL over the ``results``, ``reported`` and ``calibration`` views (what ``sage sql`` runs).

The security boundary is the sandboxed connection (:mod:`analysis.sandbox`): no file or network
access, no extensions, locked settings, bounded memory and threads, and a wall-clock timeout.
The statement check below is not a guard (DuckDB parses ``WITH x AS (COPY ...) SELECT`` as a
SELECT); it only keeps the session's own views intact and gives a clearer message for the
obvious cases (``INSERT``, ``CREATE``, several statements).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.sandbox import Limits, error_line, run_bounded
from analysis.views import Source, open_source
from sage_core.defs.errors import QueryError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["check_readonly", "readonly_query", "MAX_LIMIT", "SqlResult"]

MAX_LIMIT = 1_000_000


def check_readonly(query: str) -> None:
    """Raise :class:`QueryError` unless ``query`` is one statement that parses as SELECT."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    if not isinstance(query, str) or not query.strip():
        raise QueryError("empty query; pass one SELECT statement, e.g. \"SELECT count(*) FROM results\"")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {error_line(exc)}") from None
    if not statements:
        raise QueryError("the query holds no statement (only comments or ';'); pass one SELECT statement, "
                         "e.g. \"SELECT count(*) FROM results\"")
    if len(statements) != 1:
        raise QueryError(
            f"only one statement may run, got {len(statements)}; remove the extra ';'-separated statements"
        )
    if statements[0].type != duckdb.StatementType.SELECT:
        name = _statement_name(statements[0])
        raise QueryError(
            f"refused {'an' if name[0] in 'AEIOU' else 'a'} {name} statement: `sage sql` is read-only and runs "
            "only SELECT/WITH queries over the views results, reported and calibration"
        )


def _statement_name(statement: duckdb.Statement) -> str:
    """The statement's kind as the user wrote it: DuckDB files INSTALL (and FORCE INSTALL) under LOAD."""
    name = str(statement.type).rsplit(".", 1)[-1]
    words = statement.query.upper().split()[:2]
    return "INSTALL" if name == "LOAD" and "INSTALL" in words else name


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"--limit {limit!r} is not allowed (allowed: a whole number from 1 to {MAX_LIMIT:,})")
    return limit


class SqlResult:
    """The rows of a query (at most ``limit``) and whether more rows were left out."""

    def __init__(self, frame: pd.DataFrame, *, truncated: bool):
        self.frame = frame
        self.truncated = truncated


def readonly_query(
    source: Source,
    query: str,
    *,
    skip_bad: bool = False,
    limit: int | None = None,
    limits: Limits | None = None,
) -> pd.DataFrame:
    """Run one read-only query over ``source``'s views in the sandbox; at most ``limit`` rows."""
    return run_query(source, query, skip_bad=skip_bad, limit=limit, limits=limits).frame


def run_query(
    source: Source,
    query: str,
    *,
    skip_bad: bool = False,
    limit: int | None = None,
    limits: Limits | None = None,
) -> SqlResult:
    """:func:`readonly_query` that also says whether rows beyond ``limit`` were left out."""
    check_readonly(query)
    if limit is not None:
        check_limit(limit)
    limits = limits or Limits()
    con, owned = open_source(source, skip_bad=skip_bad, limits=limits)
    try:
        def work() -> pd.DataFrame:
            rel = con.sql(query)
            if rel is None:  # pragma: no cover - a SELECT always yields a relation
                raise QueryError("the query returned no result set")
            if limit is not None:
                rel = rel.limit(limit + 1)  # one more row says whether more were left out
            return rel.df()

        frame = run_bounded(con, work, timeout_s=limits.timeout_s)
    finally:
        if owned:
            con.close()
    if limit is not None and len(frame) > limit:
        return SqlResult(frame.head(limit), truncated=True)
    return SqlResult(frame, truncated=False)
