"""Which rows count: the two selection rules of the results store, each written once.

- **Newest write wins** (:func:`newest_write_sql`): a key ``(sweep_id, trial_id, step, fidelity)``
  written again (a retry, a resumed driver, a rerun image stage) keeps the row of its newest file;
  file names sort in write order within a sweep folder. The store's compaction and the
  ``results`` view both use it.
- **Last row per trial** (:data:`TRIAL_KEY`): per ``(sweep_id, trial_id, fidelity)`` the row with
  the largest step, in SQL (:func:`last_step_sql`, for fronts and ablation tables) and over row
  dicts (:func:`last_rows`, for the sweep driver, status and calibration); a test checks that the
  two agree. A trial's status is the status of its row with the largest step over all fidelities
  (:func:`trial_status_sql`), so a pruned trial does not come back through its earlier rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["TRIAL_KEY", "newest_write_sql", "last_step_sql", "last_rows", "trial_status_sql"]

TRIAL_KEY = ("sweep_id", "trial_id", "fidelity")


def newest_write_sql(relation: str, *, keys: Sequence[str], file_column: str = "_file") -> str:
    """SELECT of ``relation`` keeping, per key, the row whose ``file_column`` sorts last (the
    newest file), without that column; the key columns first."""
    cols = ", ".join(keys)
    return (f"SELECT {cols}, * EXCLUDE ({cols}, {file_column}) FROM {relation} "
            f"QUALIFY row_number() OVER (PARTITION BY {cols} ORDER BY {file_column} DESC) = 1")


def last_step_sql(select: str, *, columns: Sequence[str]) -> str:
    """``select`` (a SELECT statement whose result has ``columns``) narrowed to each trial's last
    step per fidelity; unchanged when it has no ``step`` or no trial key column."""
    key = [c for c in TRIAL_KEY if c in columns]
    if "step" not in columns or not key:
        return select
    return (f"SELECT * FROM ({select}) QUALIFY row_number() OVER "
            f"(PARTITION BY {', '.join(key)} ORDER BY step DESC) = 1")


def trial_status_sql(relation: str) -> str:
    """SELECT of ``(sweep_id, trial_id, status)``: each trial's status, that of its row with the
    largest step."""
    return f"SELECT sweep_id, trial_id, arg_max(status, step) AS status FROM {relation} GROUP BY sweep_id, trial_id"


def last_rows(rows: Iterable[Mapping[str, Any]], *,
              fidelity: str | None = None) -> dict[tuple[Any, Any, Any], dict[str, Any]]:
    """Each trial's row with the largest step per fidelity (only ``fidelity`` when given), keyed by
    ``(sweep_id, trial_id, fidelity)``; of two rows at one step the later one wins (the store never
    holds both)."""
    last: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for row in rows:
        if fidelity is not None and row.get("fidelity") != fidelity:
            continue
        sweep_id, trial_id, row_fidelity = (row.get(c) for c in TRIAL_KEY)
        key = (sweep_id, trial_id, row_fidelity)
        prev = last.get(key)
        if prev is None or int(row["step"]) >= int(prev["step"]):
            last[key] = dict(row)
    return last
