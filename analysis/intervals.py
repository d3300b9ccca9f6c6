"""Showing a value with its bootstrap interval: ``0.612 [0.581, 0.640]``.

A column ``m`` has an interval when the columns ``m_lo`` and ``m_hi`` sit beside it (the
evaluators write them for every rate and mean, see :func:`sage_core.defs.metrics.interval_columns`).
:func:`interval_frame` turns such a frame into display text for tables (``sage pareto``,
``sage sweep status``, ``sage ablation``, the report): one cell per metric, the ``_lo``/``_hi``
columns folded into it. Data frames and CSV keep the three numbers apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MISSING", "fmt_number", "fmt_interval", "fmt_cell", "has_interval", "interval_frame"]

MISSING = "–"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_number(v: Any) -> str:
    """A number to 4 significant digits, text as is, missing as '–'."""
    if _missing(v):
        return MISSING
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item) and not isinstance(v, (str, bytes)):
        return fmt_number(item())
    return str(v)


def fmt_interval(value: Any, lo: Any, hi: Any) -> str:
    """``0.612 [0.581, 0.640]``: three decimals for values below 100 in size, else 4 significant
    digits; the bracket is left out when a bound is missing."""
    if _missing(value):
        return MISSING
    if _missing(lo) or _missing(hi):
        return fmt_number(float(value))
    nums = [float(value), float(lo), float(hi)]
    f = (lambda v: f"{v:.3f}") if max(abs(v) for v in nums) < 100 else (lambda v: f"{v:.4g}")
    return f"{f(nums[0])} [{f(nums[1])}, {f(nums[2])}]"


def has_interval(name: str, columns: Sequence[str] | Mapping[str, Any]) -> bool:
    """``name_lo`` and ``name_hi`` are both among ``columns`` (or keys of a row)."""
    return f"{name}_lo" in columns and f"{name}_hi" in columns


def fmt_cell(row: Mapping[str, Any], name: str) -> str:
    """The display text of ``row[name]``, with its interval when the row carries one."""
    if has_interval(name, row):
        return fmt_interval(row.get(name), row.get(f"{name}_lo"), row.get(f"{name}_hi"))
    return fmt_number(row.get(name))


def interval_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A display copy of ``df``: every column ``m`` with ``m_lo``/``m_hi`` beside it becomes text
    ``value [lo, hi]`` and the bound columns are dropped; other numbers become text to 4
    significant digits, missing values '–'. Column order and ``attrs`` are kept."""
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

    cols = list(df.columns)
    with_iv = [c for c in cols if has_interval(str(c), cols)]
    bounds = {f"{c}_lo" for c in with_iv} | {f"{c}_hi" for c in with_iv}
    out = pd.DataFrame(index=df.index)
    for c in cols:
        if c in bounds:
            continue
        if c in with_iv:
            out[c] = [fmt_interval(v, lo, hi) for v, lo, hi in zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"], strict=True)]
        else:
            out[c] = [fmt_number(v) for v in df[c]]
    out.attrs.update(df.attrs)
    return out
