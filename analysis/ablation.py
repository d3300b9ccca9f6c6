"""Ablation tables in the layout of the paper's appendix (docs/method.md section 9).

For one hyperparameter, one row per value: the metrics of the trials where every other
hyperparameter sits at its default. Each trial contributes one row: its last step, image-level
metrics first and text-level ones from its last text step where the image row lacks them. Trials
sharing a value are averaged (``n`` counts them).

Which trials: a hyperparameter that varies *within* a value of ``param`` (a grid crossed with
another dimension) is held at its default; one that is constant within every value but differs
between them is *set by* ``param`` (a ``variant`` such as DES sets ``method``, ``lambda_esp`` and
``lambda_lsa``): it is not filtered, so every variant keeps its row, and it is shown as a column.

Columns (only where measured): ``param``, ``n``, ``method``, the columns set by ``param``, then the
headline metrics: the objectives (image level ``asr``, ``tifa`` first, then the sweep's text
objectives, by default :data:`sage_core.defs.metrics.DEFAULT_OBJECTIVES`) and the paper's geometry
diagnostics (registry entries of fidelity ``geometry``), each followed by its bootstrap interval
``<m>_lo``, ``<m>_hi`` where the rows carry one (the mean of the trials' bounds when ``n`` > 1:
wider than an interval of the mean). ``all_columns=True`` appends every other metric in the
appendix order: ASR per attack set and average (image, then text proxy), TIFA overall and by
category (then the text utility proxy), CLIPScore, FID, GenEval, R_s, Jaccard@K, distortions,
losses. Markdown shows a metric with an interval as ``0.612 [0.581, 0.640]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from analysis.ablation_paired import marked, with_paired_deltas
from analysis.column_roles import ColumnRoles, roles_of
from analysis.intervals import interval_frame
from analysis.rows import last_step_sql, trial_status_sql
from analysis.views import Source, columns_of, open_source, require_columns
from sage_core.defs.columns import BOOKKEEPING_COLUMNS, READER_COLUMNS
from sage_core.defs.config import field_defaults
from sage_core.defs.errors import QueryError
from sage_core.defs.metrics import (
    DEFAULT_OBJECTIVES,
    DEFAULT_PAIRS,
    REGISTRY,
    TIFA_CATEGORIES,
    interval_columns,
    is_interval_column,
    is_metric,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PAPER_DEFAULTS", "ABLATION_PARAMS", "ablation_table", "ablation_frame", "hyperparameters",
           "metric_order", "headline_metrics", "to_markdown"]

# The official SAGE run's values (TrainConfig's defaults, docs/method.md section 5) of the paper's
# one-at-a-time ablations: their base point for a store without declared column roles.
PAPER_DEFAULTS: dict[str, float] = {name: field_defaults()[name] for name in (
    "lambda_safe", "lambda_esp", "lambda_lsa", "local_k", "alpha", "concept_guidance_scale")}
# Columns the report ablates over when they vary (any hyperparameter column works with --param).
ABLATION_PARAMS: tuple[str, ...] = (*PAPER_DEFAULTS, "variant", "lr", "concept_guidance_ratio", "des_terms")
ASR_SETS = ("mma", "sneaky", "i2p_sexual", "ringabell", "p4d")
# Without declared roles: never a hyperparameter (``method`` is one, shown as a column of its own).
_NOT_HYPERPARAMETERS = frozenset({*BOOKKEEPING_COLUMNS, *READER_COLUMNS, "method"})


def _family(columns: Sequence[str], base: str, order: Sequence[str], *, exclude: Sequence[str] = ()) -> list[str]:
    """``base_<x>`` columns in ``order`` then alphabetically, followed by ``base`` itself."""
    prefix = base + "_"
    found = [
        c for c in columns
        if c.startswith(prefix) and not any(c.startswith(e) or c == e for e in exclude)
    ]
    known = [prefix + o for o in order if prefix + o in found]
    rest = sorted(set(found) - set(known))
    return known + rest + ([base] if base in columns else [])


def metric_order(columns: Sequence[str]) -> list[str]:
    """The metric columns among ``columns`` in the appendix-table order."""
    cols = list(columns)
    tifa = (["tifa"] if "tifa" in cols else []) + [
        c for c in _family(cols, "tifa", TIFA_CATEGORIES, exclude=("tifa_drop",)) if c != "tifa"
    ] + (["tifa_drop"] if "tifa_drop" in cols else [])
    util = (["util_text"] if "util_text" in cols else []) + [
        c for c in _family(cols, "util_text", TIFA_CATEGORIES) if c != "util_text"
    ]
    ordered = (
        _family(cols, "asr", ASR_SETS, exclude=("asr_text",))
        + _family(cols, "asr_text", ASR_SETS)
        + tifa
        + util
        + [c for c in ("clipscore", "fid", "geneval", "spread_ratio") if c in cols]
        + (["jaccard"] if "jaccard" in cols else []) + sorted(c for c in cols if c.startswith("jaccard_"))
        + sorted(c for c in cols if c.startswith("distortion_"))
        + (["loss"] if "loss" in cols else []) + sorted(c for c in cols if c.startswith("loss_"))
    )
    seen = dict.fromkeys(c for c in ordered if is_metric(c))
    return list(seen) + [c for c in cols if is_metric(c) and c not in seen]


def headline_metrics(columns: Sequence[str], *, objectives: Sequence[str] | None = None) -> list[str]:
    """The metrics a table shows first, among ``columns``: image-level objectives, the text
    objectives (``objectives``, default :data:`DEFAULT_OBJECTIVES`), the geometry diagnostics."""
    geometry = [m.name for m in REGISTRY.values() if m.fidelity == "geometry" and not m.family]
    wanted = [*DEFAULT_PAIRS["image"], *(objectives if objectives is not None else DEFAULT_OBJECTIVES), *geometry]
    cols = set(columns)
    return [m for m in dict.fromkeys(wanted) if m in cols]


def hyperparameters(columns: Sequence[str], roles: ColumnRoles | None = None) -> list[str]:
    """The hyperparameter columns among ``columns``: those the sweep declared (``roles``, its
    schema.json); without declared roles, the columns that are neither keys, bookkeeping, metrics
    nor their intervals."""
    if roles is not None:
        declared = set(roles.hyperparameters)
        return [c for c in columns if c in declared]
    return [
        c for c in columns
        if c not in _NOT_HYPERPARAMETERS and not is_metric(c) and not is_interval_column(c)
        and not c.startswith(("_", "base_"))
    ]


def _last_rows(con, *, statuses: Sequence[str] | None) -> pd.DataFrame:
    """One row per trial: the last step per fidelity, merged with image values first.

    A trial's status is the status of its row with the highest step, so a pruned trial does not
    come back through its earlier ``running`` rows."""
    cols = columns_of(con, "results")
    where = ""
    if statuses is not None and "status" in cols:
        allowed = ", ".join("'" + s.replace("'", "''") + "'" for s in statuses)
        where = (f"WHERE (sweep_id, trial_id) IN (SELECT (sweep_id, trial_id) FROM ({trial_status_sql('results')}) "
                 f"WHERE status IN ({allowed}))")
    df = con.sql(last_step_sql(f"SELECT * FROM results {where}", columns=cols)).df()
    if df.empty:
        return df
    df["_fid_rank"] = (df["fidelity"] != "image").astype(int)
    df["_text_step"] = df["step"].where(df["fidelity"] == "text")  # where its per-prompt scores are
    df = df.sort_values(["sweep_id", "trial_id", "_fid_rank"], kind="stable")
    # first() skips missing values column by column: image metrics win, text ones fill the gaps.
    merged = df.groupby(["sweep_id", "trial_id"], sort=True, dropna=False).first().reset_index()
    return merged.drop(columns="_fid_rank")


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def ablation_frame(
    source: Source,
    *,
    param: str,
    defaults: Mapping[str, float] | None = None,
    statuses: Sequence[str] | None = ("finished", "running"),
    skip_bad: bool = False,
    objectives: Sequence[str] | None = None,
    all_columns: bool = False,
) -> pd.DataFrame:
    """The ablation table of ``param`` as a DataFrame (module docstring); ``attrs['notes']`` lists the
    fixed values, ``attrs['set_by']`` the columns ``param`` sets. With the sweep's declared column
    roles (its schema.json), the other hyperparameters sit at its base config and the objectives are
    its own; without them, at :data:`PAPER_DEFAULTS`."""
    con, owned = open_source(source, skip_bad=skip_bad)
    try:
        roles = roles_of(con)
        cols = columns_of(con, "results")
        require_columns([param], available=hyperparameters(cols, roles), kind="hyperparameter")
        df = _last_rows(con, statuses=statuses)
    finally:
        if owned:
            con.close()
    base = {**(roles.numeric_defaults() if roles is not None else PAPER_DEFAULTS), **(defaults or {})}
    if objectives is None and roles is not None and roles.objectives:
        objectives = list(roles.objectives)
    df = df[df[param].notna()] if not df.empty else df
    if df.empty:
        raise QueryError(f"no trials with a value for {param!r} (statuses {list(statuses or [])}) in the results")
    df, notes = _at_defaults(df, param=param, base=base, set_by=_set_by(df, param=param, roles=roles))
    set_by = _set_by(df, param=param, roles=roles)  # what param sets among the trials kept
    measured = [m for m in metric_order(list(df.columns)) if df[m].notna().any()]
    metrics = headline_metrics(measured, objectives=objectives)
    if all_columns:
        metrics += [m for m in measured if m not in metrics]
    out = _by_value(df, param=param, columns=_with_bounds(df, metrics), set_by=set_by)
    out.attrs["notes"] = notes
    out.attrs["objectives"] = [m for m in (objectives or DEFAULT_OBJECTIVES) if m in out.columns]
    out.attrs["trials"] = df[[param, "sweep_id", "trial_id", "_text_step"]].to_dict("records")
    out.attrs["param"] = param
    out.attrs["set_by"] = set_by
    return out


def _with_bounds(df: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """Each metric, followed by its interval columns where the rows hold them."""
    with_bounds: list[str] = []
    for m in metrics:
        with_bounds.append(m)
        lo, hi = interval_columns(m)
        if lo in df.columns and hi in df.columns and df[lo].notna().any() and df[hi].notna().any():
            with_bounds += [lo, hi]
    return with_bounds


def _by_value(df: pd.DataFrame, *, param: str, columns: Sequence[str], set_by: Sequence[str]) -> pd.DataFrame:
    """One row per value of ``param``: the trial count ``n``, the method and the other columns ``param``
    sets, and the mean of ``columns``."""
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

    grouped = df.groupby(param, sort=True)
    out = (grouped[list(columns)].mean() if columns
           else pd.DataFrame(index=pd.Index(sorted(df[param].unique()), name=param)))  # no headline metric
    out.insert(0, "n", grouped.size())
    front = ["method"] if "method" in df.columns else []
    front += [h for h in set_by if h != "method"]
    for i, h in enumerate(front, start=1):
        if df[h].dtype.kind in "iuf":  # numbers set by param stay numbers (CSV, plots)
            out.insert(i, h, grouped[h].first())
        else:
            out.insert(i, h, grouped[h].agg(lambda s: "/".join(sorted({str(v) for v in s.dropna()}))))
    return out.reset_index()


def _at_defaults(df: pd.DataFrame, *, param: str, base: Mapping[str, float],
                 set_by: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The trials whose other hyperparameters sit at ``base`` (those ``param`` sets excepted), and
    the notes saying what was fixed or filtered."""
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

    notes: list[str] = []
    for name, value in base.items():
        if name == param or name not in df.columns:
            continue
        present = sorted({float(v) for v in df[name].dropna()})
        if len(present) == 1 and not _close(present[0], value):
            notes.append(f"{name} fixed at {present[0]:g} in every trial (default {value:g})")
            continue
        if len(present) > 1 and name in set_by:
            continue
        if len(present) > 1:
            keep = df[name].map(lambda v, value=value: v is not None and not pd.isna(v) and _close(v, value))
            if not keep.any():
                raise QueryError(
                    f"no trials have {name} at its default {value:g} (values present: "
                    f"{', '.join(f'{p:g}' for p in present)}); pass defaults={{{name!r}: ...}} "
                    f"(CLI: --default {name}=VALUE)"
                )
            df = df[keep]
            notes.append(f"{name} = {value:g}")
    return df, notes


def _set_by(df: pd.DataFrame, *, param: str, roles: ColumnRoles | None) -> list[str]:
    """Hyperparameters constant within every value of ``param`` and different between two of them."""
    out = []
    grouped = df.groupby(param, sort=True)
    for h in hyperparameters(list(df.columns), roles):
        if h in (param, "method") or df[h].nunique(dropna=True) < 2:  # method: a column of its own
            continue
        if (grouped[h].nunique(dropna=True) <= 1).all():
            out.append(h)
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``df`` (numbers to 4 significant digits, a metric with ``_lo``/``_hi``
    columns as ``value [lo, hi]``, missing as '–')."""
    shown = interval_frame(df)
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    notes = df.attrs.get("notes") or []
    tail = [f"\nOthers at defaults: {'; '.join(notes)}."] if notes else []
    if df.attrs.get("set_by"):
        tail.append(f"\nSet by each {df.attrs.get('param')}: {', '.join(df.attrs['set_by'])}.")
    tail += [f"\n{line}" for line in df.attrs.get("paired_notes", [])]
    return "\n".join([header, rule, *body, *tail]) + "\n"


def ablation_table(
    source: Source,
    *,
    param: str,
    fmt: Literal["md", "csv"] | None = "md",
    defaults: Mapping[str, float] | None = None,
    statuses: Sequence[str] | None = ("finished", "running"),
    skip_bad: bool = False,
    objectives: Sequence[str] | None = None,
    all_columns: bool = False,
    vs: str | float | None = None,
) -> str | pd.DataFrame:
    """Ablation table for ``param`` (see the module docstring) as Markdown, CSV, or a DataFrame (fmt=None).

    ``defaults`` overrides :data:`PAPER_DEFAULTS` (e.g. ``{"local_k": 10}``); a hyperparameter
    that holds one value in every trial is not filtered but named in the notes, nor is one that
    ``param`` sets. ``statuses`` keeps trials whose last row has one of these statuses (``None``:
    all; pruned and failed trials are left out by default because they stopped early).
    ``objectives``: the text objectives shown first (the sweep's; default
    :data:`sage_core.defs.metrics.DEFAULT_OBJECTIVES`); ``all_columns``: every metric, not only the
    headline ones. CSV keeps intervals as ``<m>_lo``/``<m>_hi`` columns; Markdown folds them.
    ``vs``: the value of ``param`` every other row is compared with, by a paired bootstrap over the
    prompts (:mod:`analysis.ablation_paired`: a ``Δ<objective> vs <value>`` column per objective).
    """
    if fmt not in ("md", "csv", None):
        raise QueryError(f"fmt {fmt!r} is not allowed (allowed: md, csv, None)")
    df = ablation_frame(source, param=param, defaults=defaults, statuses=statuses, skip_bad=skip_bad,
                        objectives=objectives, all_columns=all_columns)
    if vs is not None:
        df = with_paired_deltas(df, source, vs=vs)
    if fmt is None:
        return df
    if fmt == "csv":
        return df.to_csv(index=False)
    if vs is not None:
        return to_markdown(marked(df))
    return to_markdown(df)
