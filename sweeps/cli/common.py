"""What the analysis commands share: the RESULTS and --skip-bad help, DuckDB errors as one line, and
the rich table printer (a module of its own so the commands import it, not each other)."""

from __future__ import annotations

import math
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from analysis.intervals import interval_frame
from analysis.sandbox import duckdb_error

RESULTS_HELP = (
    "Results dataset: its root (holding sweep_id=... folders), a sweep folder that contains "
    "results/, or a URI such as s3://bucket/prefix. Example: runs/demo"
)
SKIP_BAD_HELP = ("Skip bad Parquet files (corrupt, foreign, wrong column types, links out of the store; each "
                 "is named in a warning) instead of failing.")


@contextmanager
def duckdb_errors():
    """A DuckDB failure inside a command becomes one line (what the sandbox refused, when it did)."""
    import duckdb  # lazy: duckdb, off `sage` start-up

    try:
        yield
    except duckdb.Error as exc:
        raise duckdb_error(exc) from None


def print_frame(df, *, title: str | None = None, max_rows: int = 200, intervals: bool = False) -> None:
    """``intervals``: show a column ``m`` with ``m_lo``/``m_hi`` beside it as ``0.612 [0.581, 0.640]``."""
    numeric = {c for c in df.columns if df[c].dtype.kind in "iuf"}
    if intervals:
        df = interval_frame(df)
    table = Table(title=title, show_lines=False)
    for col in df.columns:
        table.add_column(str(col), min_width=len(str(col)), justify="right" if col in numeric else "left")
    for row in df.head(max_rows).itertuples(index=False):
        cells = []
        for v in row:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("–")
            elif isinstance(v, float):
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    probe = Console()
    console = probe if probe.is_terminal else Console(width=400)  # piped: never crop columns
    console.print(table)
    if len(df) > max_rows:
        console.print(f"... {len(df) - max_rows} more rows")
