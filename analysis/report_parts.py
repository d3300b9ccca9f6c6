"""HTML pieces every section of the report uses: a scrolling table with intervals, the registry's
meaning of each metric, the varied hyperparameters and one label per trial."""

from __future__ import annotations

import html

from analysis.ablation import hyperparameters
from analysis.column_roles import ColumnRoles
from analysis.intervals import fmt_number, interval_frame
from sage_core.defs.metrics import describe, is_metric

__all__ = ["html_table", "metric_notes", "trial_labels", "varied_columns"]


def html_table(df) -> str:
    """HTML of ``df`` in a box that scrolls sideways when wide; a column with ``_lo``/``_hi``
    columns beside it as ``value [lo, hi]``."""
    return f'<div class=scroll>{interval_frame(df).to_html(index=False, escape=True, border=0)}</div>'


def metric_notes(names) -> str:
    """The registry's one-line meaning of each metric, as a definition list."""
    items = "".join(f"<dt>{html.escape(n)}</dt><dd>{html.escape(describe(n).split(': ', 1)[1])}</dd>"
                    for n in dict.fromkeys(names) if is_metric(n))
    return f"<dl class=metrics>{items}</dl>" if items else ""


def varied_columns(df, roles: ColumnRoles | None) -> list[str]:
    """Hyperparameter columns of ``df`` (declared by ``roles`` when the sweep wrote them) that take
    more than one value."""
    return [h for h in hyperparameters(list(df.columns), roles) if df[h].nunique(dropna=True) > 1]


def trial_labels(df, *, varied: list[str]):
    """One label per row: ``name=value`` of the ``varied`` hyperparameters (the trial id when none
    vary); a label shared by several trials gets the trial id appended."""
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

    if not varied:
        return df["trial_id"].astype(str)
    text = pd.Series([", ".join(f"{h}={fmt_number(row[h])}" for h in varied) for _, row in df.iterrows()],
                     index=df.index, dtype=object)
    twin = text.duplicated(keep=False)
    return text.where(~twin, text + " (" + df["trial_id"].astype(str) + ")")
