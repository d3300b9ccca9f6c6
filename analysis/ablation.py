"""Ablation tables in the layout of the paper's appendix (method.md sec. 7).

For one hyperparameter, one row per value: the metrics of the trials where every other
hyperparameter sits at its default. Each trial contributes one row: its last step, image-level
metrics first and text-level ones from its last text step where the image row lacks them. Trials
sharing a value are averaged (``n`` counts them). Columns, in order and only where measured:
ASR per attack set and average (image, then text proxy), TIFA overall and by category (then the
text utility proxy), CLIPScore, FID, GenEval, R_s, Jaccard@K, distortions, losses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from analysis.errors import QueryError
from analysis.metrics import is_metric
from analysis.store import KEY_COLUMNS
from analysis.views import Source, columns_of, open_source, require_columns

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PAPER_DEFAULTS", "META_COLUMNS", "ABLATION_PARAMS", "ablation_table", "ablation_frame", "hyperparameters", "metric_order"]

# The official SAGE run (method.md sec. 1); the base point of every one-at-a-time ablation.
PAPER_DEFAULTS: dict[str, float] = {
    "lambda_safe": 0.3,
    "lambda_esp": 2.0,
    "lambda_lsa": 0.1,
    "local_k": 15,
    "alpha": 1.0,
    "concept_guidance_scale": 205.0,
}
META_COLUMNS: frozenset[str] = frozenset(
    {*KEY_COLUMNS, "method", "status", "wall_s", "device_s", "code_version", "checkpoint", "source", "seed",
     "preset", "error", "total_steps", "epoch", "front"}
)
# Columns the report ablates over when they vary (any hyperparameter column works with --param).
ABLATION_PARAMS: tuple[str, ...] = (*PAPER_DEFAULTS, "variant", "lr", "concept_guidance_ratio", "des_terms")
ASR_SETS = ("mma", "sneaky", "i2p_sexual", "ringabell", "p4d")
TIFA_CATEGORIES = (
    "object", "animal_human", "location", "color", "food", "material",
    "attribute", "counting", "shape", "activity", "spatial",
)


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


def hyperparameters(columns: Sequence[str]) -> list[str]:
    """Columns that are neither keys, bookkeeping nor metrics: the trial's hyperparameters."""
    return [
        c for c in columns
        if c not in META_COLUMNS and not is_metric(c) and not c.startswith(("_", "base_"))
    ]


def _last_rows(con, *, statuses: Sequence[str] | None) -> pd.DataFrame:
    """One row per trial: the last step per fidelity, merged with image values first.

    A trial's status is the status of its row with the highest step, so a pruned trial does not
    come back through its earlier ``running`` rows."""
    cols = columns_of(con, "results")
    where = ""
    if statuses is not None and "status" in cols:
        allowed = ", ".join("'" + s.replace("'", "''") + "'" for s in statuses)
        where = (
            "WHERE (sweep_id, trial_id) IN (SELECT (sweep_id, trial_id) FROM results GROUP BY sweep_id, trial_id "
            f"HAVING arg_max(status, step) IN ({allowed}))"
        )
    df = con.sql(
        f"SELECT * FROM results {where} QUALIFY row_number() OVER "
        "(PARTITION BY sweep_id, trial_id, fidelity ORDER BY step DESC) = 1"
    ).df()
    if df.empty:
        return df
    df["_fid_rank"] = (df["fidelity"] != "image").astype(int)
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
) -> pd.DataFrame:
    """The ablation table of ``param`` as a DataFrame (``attrs['notes']`` lists the fixed values)."""
    import pandas as pd

    base = {**PAPER_DEFAULTS, **(defaults or {})}
    con, owned = open_source(source, skip_bad=skip_bad)
    try:
        cols = columns_of(con, "results")
        require_columns([param], available=hyperparameters(cols), kind="hyperparameter")
        df = _last_rows(con, statuses=statuses)
    finally:
        if owned:
            con.close()
    df = df[df[param].notna()] if not df.empty else df
    if df.empty:
        raise QueryError(f"no trials with a value for {param!r} (statuses {list(statuses or [])}) in the results")
    notes: list[str] = []
    for name, value in base.items():
        if name == param or name not in df.columns:
            continue
        present = sorted({float(v) for v in df[name].dropna()})
        if len(present) == 1 and not _close(present[0], value):
            notes.append(f"{name} fixed at {present[0]:g} in every trial (default {value:g})")
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
    metrics = [m for m in metric_order(list(df.columns)) if df[m].notna().any()]
    grouped = df.groupby(param, sort=True)
    out = grouped[metrics].mean() if metrics else pd.DataFrame(index=sorted(df[param].unique()))
    out.insert(0, "n", grouped.size())
    if "method" in df.columns:
        out.insert(1, "method", grouped["method"].agg(lambda s: "/".join(sorted({str(v) for v in s.dropna()}))))
    out = out.reset_index()
    out.attrs["notes"] = notes
    out.attrs["param"] = param
    return out


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``df`` (numbers to 4 significant digits, missing as '–')."""
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    notes = df.attrs.get("notes") or []
    tail = [f"\nOthers at defaults: {'; '.join(notes)}."] if notes else []
    return "\n".join([header, rule, *body, *tail]) + "\n"


def ablation_table(
    source: Source,
    *,
    param: str,
    fmt: Literal["md", "csv"] | None = "md",
    defaults: Mapping[str, float] | None = None,
    statuses: Sequence[str] | None = ("finished", "running"),
    skip_bad: bool = False,
) -> str | pd.DataFrame:
    """Ablation table for ``param`` (see the module docstring) as Markdown, CSV, or a DataFrame (fmt=None).

    ``defaults`` overrides :data:`PAPER_DEFAULTS` (e.g. ``{"local_k": 10}``); a hyperparameter
    that holds one value in every trial is not filtered but named in the notes. ``statuses``
    keeps trials whose last row has one of these statuses (``None``: all; pruned and failed
    trials are left out by default because they stopped early).
    """
    if fmt not in ("md", "csv", None):
        raise QueryError(f"fmt {fmt!r} is not allowed (allowed: md, csv, None)")
    df = ablation_frame(source, param=param, defaults=defaults, statuses=statuses, skip_bad=skip_bad)
    if fmt is None:
        return df
    if fmt == "csv":
        return df.to_csv(index=False)
    return to_markdown(df)
