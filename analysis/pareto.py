"""Pareto fronts, non-dominated ranks and hypervolume over the ``results`` view.

Every objective becomes a minimisation, ``a = sign(metric) * value`` (see
:mod:`sage_core.defs.metrics`). Point p is dominated iff some q has ``a_q <= a_p`` in every objective and
``<`` in one; equal points do not dominate each other, so duplicates on the front all stay.

Two objectives run in SQL in O(n log n). With ``(a, b)`` the minimised pair, sort by ``(a, b)``:
every point q before p in that order has ``a_q < a_p``, or ``a_q = a_p`` and ``b_q < b_p``, unless
it is an exact duplicate of p. So p is on the front iff ``b_p < min{b_q : (a_q, b_q) < (a_p, b_p)}``,
a running minimum over the sort that leaves out p's duplicates (a window frame with
``EXCLUDE GROUP``). First an O(n) pass drops every point dominated by one pivot (the point with
the least ``a + b``, itself on the front), which leaves few rows to sort on typical data. It stays
for very large stores; a test checks it against :func:`analysis.dominance.nondominated_ranks` on
seeded data with ties and duplicates. Three or more objectives, ranks and hypervolume use
:mod:`analysis.dominance`, the one Pareto implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from analysis import dominance
from analysis.rows import last_step_sql
from analysis.views import Source, columns_of, open_source, require_columns
from sage_core.defs.errors import QueryError
from sage_core.defs.metrics import DEFAULT_PAIRS, sign

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["pareto_front", "pareto_ranks", "hypervolume", "nadir", "DEFAULT_PAIRS"]

_BY_ALIASES = {"sweep": "sweep_id", "trial": "trial_id"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _objectives(x: str, y: str, extra: str | Sequence[str] | None) -> list[str]:
    more = [extra] if isinstance(extra, str) else list(extra or [])
    objs = [x, y, *more]
    if len(set(objs)) != len(objs):
        raise QueryError(f"objectives must differ, got {objs}")
    return objs


def _candidates_sql(
    con: duckdb.DuckDBPyConnection,
    *,
    table: str,
    objs: list[str],
    by: str | None,
    fidelity: str | None,
    steps: Literal["last", "all"],
    include_failed: bool,
) -> tuple[str, str | None]:
    """SQL of the candidate rows (objectives present and finite; last step per trial) and the group column."""
    cols = columns_of(con, table)
    require_columns(objs, available=cols, kind="metric column")
    group = _BY_ALIASES.get(by, by) if by else None
    if group is not None:
        require_columns([group], available=cols, kind="--by column")
    where = [f"{_q(o)} IS NOT NULL AND NOT isnan(CAST({_q(o)} AS DOUBLE))" for o in objs]
    if fidelity is not None:
        if fidelity not in DEFAULT_PAIRS:
            raise QueryError(f"fidelity {fidelity!r} is not allowed (allowed: {', '.join(DEFAULT_PAIRS)})")
        if "fidelity" in cols:
            where.append(f"fidelity = '{fidelity}'")
    if not include_failed and "status" in cols:
        where.append("status IS DISTINCT FROM 'failed'")
    sql = f"SELECT * FROM {table} WHERE " + " AND ".join(where)
    if steps == "last":
        sql = last_step_sql(sql, columns=cols)
    elif steps != "all":
        raise QueryError(f"steps {steps!r} is not allowed (allowed: last, all)")
    return sql, group


def pareto_front(
    source: Source,
    *,
    x: str = "asr",
    y: str = "tifa",
    by: str | None = None,
    fidelity: str | None = None,
    extra: str | Sequence[str] | None = None,
    steps: Literal["last", "all"] = "last",
    include_failed: bool = False,
    table: str = "results",
    skip_bad: bool = False,
) -> pd.DataFrame:
    """The non-dominated rows for objectives ``x``, ``y`` (+ ``extra``), each in its declared direction.

    ``source``: dataset root / URI / ResultStore, or a connection from :func:`analysis.connect`.
    ``by``: compute one front per value of a column (``method``, ``sweep`` = ``sweep_id``, or a
    hyperparameter such as ``local_k``). ``fidelity``: keep only ``text`` or ``image`` rows.
    ``steps="last"`` uses each trial's last step per fidelity; ``"all"`` every reported step.
    Rows with a missing or NaN objective and failed trials are left out. Sorted by group, then ``x``.
    """
    objs = _objectives(x, y, extra)
    signs = [sign(o) for o in objs]
    con, owned = open_source(source, skip_bad=skip_bad)
    try:
        cand, group = _candidates_sql(
            con, table=table, objs=objs, by=by, fidelity=fidelity, steps=steps, include_failed=include_failed
        )
        order = (f"{_q(group)}, " if group else "") + f"{_q(x)}, {_q(y)}"
        if len(objs) == 2:
            part = f"PARTITION BY {_q(group)}" if group else ""
            on = f"ON o.{_q(group)} IS NOT DISTINCT FROM p.{_q(group)}" if group else "ON true"
            sql = f"""
            WITH o AS (SELECT *, {signs[0]} * CAST({_q(x)} AS DOUBLE) AS _a,
                                 {signs[1]} * CAST({_q(y)} AS DOUBLE) AS _b FROM ({cand})),
                 p AS (SELECT {(_q(group) + ", ") if group else ""}arg_min({{'a': _a, 'b': _b}}, _a + _b) AS _piv
                       FROM o {("GROUP BY " + _q(group)) if group else ""}),
                 f AS (SELECT o.* FROM o JOIN p {on}
                       WHERE NOT (_piv.a <= _a AND _piv.b <= _b AND (_piv.a < _a OR _piv.b < _b))),
                 w AS (SELECT *, min(_b) OVER ({part} ORDER BY _a, _b RANGE BETWEEN UNBOUNDED PRECEDING
                                              AND CURRENT ROW EXCLUDE GROUP) AS _prev FROM f)
            SELECT * EXCLUDE (_a, _b, _prev) FROM w WHERE _prev IS NULL OR _prev > _b ORDER BY {order}"""
            return con.sql(sql).df()
        df = con.sql(f"SELECT * FROM ({cand}) ORDER BY {order}").df()
    finally:
        if owned:
            con.close()
    return _front_numpy(df, objs=objs, group=group)


def _groups(df: pd.DataFrame, group: str | None) -> list[np.ndarray]:
    if group is None:
        return [np.arange(len(df))]
    codes = df[group].astype("object").where(df[group].notna(), "__null__")
    return [np.flatnonzero((codes == v).to_numpy()) for v in dict.fromkeys(codes)]


def _minimised(df: pd.DataFrame, objs: list[str]) -> np.ndarray:
    vals = df[objs].to_numpy(dtype=float) if len(df) else np.zeros((0, len(objs)))
    return dominance.minimised(vals, dominance.objective_signs(objs))


def _ranks(df: pd.DataFrame, *, objs: list[str], group: str | None) -> np.ndarray:
    """0-based front of every row of ``df``, per group (:func:`analysis.dominance.nondominated_ranks`)."""
    ranks = np.zeros(len(df), dtype=np.int64)
    pts = _minimised(df, objs)
    for idx in _groups(df, group):
        ranks[idx] = dominance.nondominated_ranks(pts[idx])
    return ranks


def _front_numpy(df: pd.DataFrame, *, objs: list[str], group: str | None) -> pd.DataFrame:
    keep = np.zeros(len(df), dtype=bool)
    pts = _minimised(df, objs)
    for idx in _groups(df, group):
        keep[idx] = dominance.front_mask(pts[idx])
    return df[keep].reset_index(drop=True)


def pareto_ranks(
    source: Source,
    *,
    x: str = "asr",
    y: str = "tifa",
    by: str | None = None,
    fidelity: str | None = None,
    extra: str | Sequence[str] | None = None,
    steps: Literal["last", "all"] = "last",
    include_failed: bool = False,
    table: str = "results",
    skip_bad: bool = False,
) -> pd.DataFrame:
    """All candidate rows with a ``front`` column: 1 for the Pareto front, 2 for the front of the
    rest, and so on (non-dominated sorting, per group when ``by`` is given)."""
    objs = _objectives(x, y, extra)
    con, owned = open_source(source, skip_bad=skip_bad)
    try:
        cand, group = _candidates_sql(
            con, table=table, objs=objs, by=by, fidelity=fidelity, steps=steps, include_failed=include_failed
        )
        df = con.sql(cand).df()
    finally:
        if owned:
            con.close()
    df["front"] = _ranks(df, objs=objs, group=group) + 1
    sort = ([group] if group else []) + ["front", x, y]
    return df.sort_values(sort, kind="stable").reset_index(drop=True)


def nadir(rows: pd.DataFrame, *, x: str, y: str, extra: str | Sequence[str] | None = None) -> list[float]:
    """The worst value of each objective over ``rows`` (in the metrics' own units): the reference
    point that makes a front's hypervolume say how much of the trials' range it dominates."""
    objs = _objectives(x, y, extra)
    require_columns(objs, available=list(rows.columns), kind="metric column")
    return [float((rows[o] * sign(o)).max() * sign(o)) for o in objs]


def hypervolume(
    points: pd.DataFrame | np.ndarray | Sequence[Sequence[float]],
    *,
    x: str = "asr",
    y: str = "tifa",
    extra: str | Sequence[str] | None = None,
    ref: Sequence[float] | None = None,
) -> float:
    """Hypervolume of ``points`` against ``ref`` (in the metrics' own units and directions).

    ``points``: a DataFrame with columns ``x``, ``y`` (+ ``extra``), or an array whose columns are
    those metrics in that order. Directions come from the metric registry (``asr`` minimised,
    ``tifa`` maximised). ``ref`` defaults to the worst value of each objective in ``points`` (the
    nadir), so a single point scores 0; pass a fixed ``ref`` to compare fronts. Rows with NaN
    are ignored; points not strictly better than ``ref`` in every objective add nothing.
    Computed by :func:`analysis.dominance.hypervolume`.
    """
    objs = _objectives(x, y, extra)
    signs = dominance.objective_signs(objs)
    if not isinstance(points, np.ndarray | Sequence):  # a DataFrame
        require_columns(objs, available=list(points.columns), kind="metric column")
        arr = points[objs].to_numpy(dtype=float)
    else:
        arr = np.asarray(points, dtype=float)
        if arr.size == 0:
            arr = arr.reshape(0, len(objs))
        if arr.ndim != 2 or arr.shape[1] != len(objs):
            raise QueryError(f"points: expected an array of shape [n, {len(objs)}] for {objs}, got {arr.shape}")
    arr = arr[~np.isnan(arr).any(axis=1)] * signs
    if len(arr) == 0:
        return 0.0
    if ref is None:
        return dominance.hypervolume(arr, arr.max(axis=0))
    r = np.asarray(ref, dtype=float)
    if r.shape != (len(objs),) or np.isnan(r).any():
        raise QueryError(f"ref: expected {len(objs)} numbers for {objs}, got {list(np.atleast_1d(ref))}")
    return dominance.hypervolume(arr, r * signs)
