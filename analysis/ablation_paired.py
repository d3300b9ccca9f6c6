"""Paired differences in an ablation table: every row against one reference row (``sage ablation --vs``).

Every trial of a sweep is scored on the same prompts (:mod:`analysis.prompt_scores`), so the
difference between two rows has a far tighter interval than their two marginal intervals suggest.
For each row other than the reference and each objective of the table, ``Δ<objective> vs <value>``
is the row's value minus the reference's, with the 95% interval of a paired bootstrap
(:func:`analysis.paired_compare.mean_difference`: 2000 replicates, seed 0, the same prompt indices
drawn in both rows, as ``sage pareto`` compares the pairs that decide a front).

Several trials per value (``seeds: N``, or repeats): each replicate recomputes every trial's
objective and averages the trials of a value, so Δ is exactly the difference of the table's two
means (what pairing trial by trial on the same seed gives as well, by linearity, when both rows ran
the same seeds), and its interval covers the prompt sample, not the seed-to-seed spread (``sage
reliability`` measures that). A row is compared only when each of its trials and of the reference's
has per-prompt scores at its last text step, all on the same prompts; otherwise its cells stay empty
and a note under the table says why. Markdown marks a Δ whose interval excludes 0 with ``*``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from analysis.intervals import fmt_interval, fmt_number
from analysis.paired_compare import CONFIDENCE, RESAMPLES, mean_difference
from analysis.prompt_scores import ScoreTable, read_prompt_scores, scores_root_for
from analysis.views import Source, locate
from sage_core.defs.errors import QueryError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["with_paired_deltas", "reference_row", "delta_column", "marked", "MARK"]

MARK = "*"


def delta_column(metric: str, label: str) -> str:
    """The name of the column of ``metric``'s paired difference against the row labelled ``label``."""
    return f"Δ{metric} vs {label}"


def reference_row(table: pd.DataFrame, *, vs: str | float) -> int:
    """The position of the row whose ``param`` value is ``vs`` (a number is matched as a number when
    the column holds numbers); a :class:`QueryError` naming the values present when none is."""
    param = table.attrs["param"]
    values = table[param].tolist()
    numeric = table[param].dtype.kind in "iuf"
    for i, v in enumerate(values):
        if numeric:
            try:
                if math.isclose(float(v), float(vs), rel_tol=1e-9, abs_tol=1e-12):
                    return i
            except ValueError:
                break
        elif str(v) == str(vs):
            return i
    raise QueryError(f"vs {str(vs)!r} is not a value of {param} in the ablation table "
                     f"(values present: {', '.join(fmt_number(v) for v in values)})")


def _scores_root(source: Source) -> str | None:
    import duckdb  # lazy: duckdb, off `import analysis` and `sage` start-up

    if isinstance(source, duckdb.DuckDBPyConnection):
        return None  # a caller's connection: no folder to find the scores in
    return scores_root_for(locate(source).uri)


def _row_tables(table: pd.DataFrame, root: str | None) -> list[tuple[list[ScoreTable], list[str]]]:
    """Per row: its trials' score tables and the ids of its trials without any."""
    param = table.attrs["param"]
    out = []
    for value in table[param].tolist():
        found: list[ScoreTable] = []
        missing: list[str] = []
        for t in (t for t in table.attrs["trials"] if t[param] == value):
            step = t["_text_step"]
            got = None
            if root is not None and step is not None and not math.isnan(step):
                got = read_prompt_scores(root, sweep_id=str(t["sweep_id"]), trial_id=str(t["trial_id"]), step=int(step))
            if got is None:
                missing.append(str(t["trial_id"]))
            else:
                found.append(got)
        out.append((found, missing))
    return out


def with_paired_deltas(table: pd.DataFrame, source: Source, *, vs: str | float, reps: int = RESAMPLES,
                       seed: int = 0) -> pd.DataFrame:
    """``table`` (:func:`analysis.ablation.ablation_frame`) with ``Δ<objective> vs <vs>`` and its
    ``_lo``/``_hi`` bounds for every objective (module docstring); ``attrs['paired_notes']`` says how
    Δ was computed and which rows have none."""
    ref = reference_row(table, vs=vs)  # before any score is read
    param, objectives = table.attrs["param"], table.attrs["objectives"]
    label = fmt_number(table[param].iloc[ref])
    out = table.copy()
    names = [delta_column(m, label) for m in objectives]
    for name in names:
        for col in (name, f"{name}_lo", f"{name}_hi"):
            out[col] = math.nan
    groups = _row_tables(table, _scores_root(source))
    ref_tables, ref_missing = groups[ref]
    unscored: list[str] = []
    unpaired: list[str] = []
    filled: set[str] = set()
    for i, (tables, missing) in enumerate(groups):
        if i == ref or ref_missing:
            continue
        row = fmt_number(table[param].iloc[i])
        got = None if missing else mean_difference(tables, ref_tables, objectives, reps=reps, seed=seed)
        if missing:
            unscored.append(row)
        elif got is None:
            unpaired.append(row)
        for m, name in zip(objectives, names, strict=True):
            if got is not None and m in got:
                out.loc[out.index[i], [name, f"{name}_lo", f"{name}_hi"]] = got[m]
                filled.add(m)
    notes = _notes(param=param, label=label, reps=reps, seed=seed, several=bool((table["n"] > 1).any()),
                   unscored=unscored, unpaired=unpaired, ref_unscored=bool(ref_missing))
    if filled and len(filled) < len(objectives):
        notes.append(f"No per-prompt scores of {', '.join(m for m in objectives if m not in filled)} in these "
                     "trials: its Δ is left empty.")
    out.attrs["paired_notes"] = notes
    out.attrs["paired"] = {"ref": ref, "columns": names}
    return out


def _notes(*, param: str, label: str, reps: int, seed: int, several: bool, unscored: list[str],
           unpaired: list[str], ref_unscored: bool) -> list[str]:
    notes = [f"Δ<objective> vs {label}: the row minus the {param} = {label} row, with a {CONFIDENCE:.0%} paired "
             f"bootstrap interval over the prompts ({reps} replicates, seed {seed}); {MARK} marks an interval that "
             "excludes 0."]
    if several:
        notes.append("Trials of one value (seeds) are averaged replicate by replicate: Δ is the difference of the "
                     "means; the interval covers the prompts, not seed-to-seed variation (see `sage reliability`).")
    if ref_unscored:
        notes.append(f"No per-prompt scores for the reference row {param} = {label}: every Δ cell is empty.")
    elif unscored:
        notes.append(f"No per-prompt scores for {param} = {', '.join(unscored)}: Δ left empty.")
    if unpaired:
        notes.append(f"Not scored on the same prompts as {param} = {label}: {', '.join(unpaired)}; Δ left empty.")
    return notes


def marked(table: pd.DataFrame) -> pd.DataFrame:
    """A display copy of a :func:`with_paired_deltas` table: each Δ as ``value [lo, hi]`` text with
    :data:`MARK` when the interval excludes 0, ``ref`` in the reference row, missing as '–'."""
    info = table.attrs["paired"]
    out = table.copy()
    for name in info["columns"]:
        cells: list[Any] = []
        for i, (v, lo, hi) in enumerate(zip(out[name], out[f"{name}_lo"], out[f"{name}_hi"], strict=True)):
            text = fmt_interval(v, lo, hi)
            excludes = not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0)
            cells.append("ref" if i == info["ref"] else text + (f" {MARK}" if excludes else ""))
        out = out.drop(columns=[f"{name}_lo", f"{name}_hi"])
        out[name] = cells
    return out
