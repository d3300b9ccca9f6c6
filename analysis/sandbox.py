"""The DuckDB sandbox every read of the results store runs in (``sage sql``, pareto, ablation, report).

The boundary is DuckDB's own configuration, not statement parsing:

- the store's checked files are loaded into in-memory tables by our own SQL first; then
  ``enable_external_access = false`` with ``allowed_directories`` holding only DuckDB's private
  spill folder, so a query can read no file (not ``/etc/passwd``, not the store, not a symlink
  out of it) and write none outside that folder. The store itself is never in the allowed list:
  measured on DuckDB 2.0, ``allowed_paths`` also lets ``COPY ... TO '<allowed file>'
  (USE_TMP_FILE false)`` overwrite that file, and a CTE-wrapped ``COPY`` parses as a SELECT;
- no extension can be installed or loaded (auto-install/auto-load off, external access off);
- ``memory_limit``, ``threads`` and ``max_temp_directory_size`` bound the resources; spill files
  go to a fresh private folder that is removed with the connection;
- ``lock_configuration = true`` last, so no statement can ``SET`` any of the above back;
- :func:`run_bounded` interrupts a query after a wall-clock timeout (``con.interrupt()`` from a
  timer thread).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sage_core.defs.errors import QueryError

if TYPE_CHECKING:
    import duckdb

__all__ = ["Limits", "open_sandbox", "lock_down", "is_locked", "run_bounded", "duckdb_error", "error_line"]

T = TypeVar("T")
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_DEPTH = re.compile(r"max expression depth limit of (\d+) exceeded", re.IGNORECASE)
MAX_TIMEOUT_S = 86_400.0


@dataclass(frozen=True)
class Limits:
    """Resource bounds of one sandboxed connection (validated at construction).

    ``memory``: DuckDB ``memory_limit`` (e.g. ``"2GB"``); ``threads``: worker threads;
    ``spill``: ``max_temp_directory_size``; ``timeout_s``: wall-clock limit of each query run
    through :func:`run_bounded`.
    """

    memory: str = "2GB"
    threads: int = 2
    spill: str = "4GB"
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("memory", "spill"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SIZE.match(value):
                raise QueryError(f"{name}={value!r} is not a size (allowed: a number and a unit, e.g. 512MB, 2GB)")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= 256:
            raise QueryError(f"threads={self.threads!r} is not allowed (allowed: a whole number from 1 to 256)")
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= MAX_TIMEOUT_S:
            raise QueryError(f"timeout={t!r} is not allowed (allowed: seconds, more than 0 and at most "
                             f"{MAX_TIMEOUT_S:g})")


def open_sandbox(limits: Limits | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the resource bounds set and file access still open, so the
    caller can load its tables; call :func:`lock_down` before any query it did not write."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    limits = limits or Limits()
    spill = tempfile.mkdtemp(prefix="sage-duckdb-")
    try:
        con = duckdb.connect(":memory:", config={
            "threads": limits.threads, "memory_limit": limits.memory, "max_temp_directory_size": limits.spill,
            "temp_directory": spill, "autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "allow_community_extensions": False,
        })
        con.execute("SET enable_progress_bar = false")
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    # The spill folder goes with the connection: when it is collected, or at exit at the latest.
    weakref.finalize(con, shutil.rmtree, spill, ignore_errors=True)
    return con


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No file or network access from here on (DuckDB keeps only its spill folder), config locked."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def is_locked(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
    ).fetchall()
    return rows == [(False, True)]


def error_line(exc: BaseException) -> str:
    """The first line of a DuckDB error, without advice the sandbox would refuse (DuckDB suggests
    ``SET max_expression_depth`` for a deep expression; the configuration is locked)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    depth = _DEPTH.search(first)
    if depth:
        return (f"the query nests expressions deeper than DuckDB's limit of {depth.group(1)} levels; "
                "write it with fewer nested parentheses or terms (the limit is fixed in the sandbox)")
    return first


def duckdb_error(exc: BaseException, *, timeout_s: float | None = None) -> QueryError:
    """One line for a DuckDB failure, saying what the sandbox refused when it refused something."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    first = error_line(exc)
    if isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in first:
        return QueryError(
            f"refused by the sandbox: {first}. Queries see only the views results, reported and calibration; "
            "they cannot read or write files, attach databases or load extensions"
        )
    if "configuration has been locked" in first:
        return QueryError(f"refused by the sandbox: {first}. Settings are fixed for the whole session")
    if isinstance(exc, duckdb.OutOfMemoryException) or "out of memory" in first.lower():
        return QueryError(f"query stopped: {first}. Narrow it (WHERE, GROUP BY, LIMIT) or raise --memory")
    if isinstance(exc, duckdb.InterruptException) and timeout_s is not None:
        return QueryError(f"query stopped after its timeout of {timeout_s:g} s; narrow it or raise --timeout")
    return QueryError(f"query failed: {first}")


def run_bounded(con: duckdb.DuckDBPyConnection, work: Callable[[], T], *, timeout_s: float) -> T:
    """``work()`` (queries on ``con``), interrupted after ``timeout_s`` seconds of wall-clock time."""
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(timeout_s, stop)
    timer.daemon = True
    timer.start()
    try:
        return work()
    except duckdb.Error as exc:
        if fired.is_set():
            raise QueryError(
                f"query stopped after its timeout of {timeout_s:g} s; narrow it or raise --timeout"
            ) from None
        raise duckdb_error(exc, timeout_s=timeout_s) from None
    finally:
        timer.cancel()
