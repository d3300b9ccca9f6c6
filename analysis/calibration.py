"""Calibration: do the cheap text-level proxies rank trials as the image-level truth does?

For each (text proxy, image metric) pair, over the trials that have both values: Kendall's
tau-b and Spearman's rho (``scipy.stats``), each with a seeded percentile-bootstrap interval
(95% by default): the trials are resampled with replacement, a trial's two values staying
together; a resample in which either column takes one value has no rank correlation and is left
out (``resamples_used`` counts the others). ``expected`` is the sign a faithful proxy shows:
``sign(text) * sign(image)`` from the metric registry (+1 when both are minimised or both
maximised, -1 when one is minimised and the other maximised).

Pairs: :data:`sage_core.defs.metrics.CALIBRATION_PAIRS`, plus every member of a pair's two families
present in both (``concept_auc_<set>`` ~ ``asr_<set>``, ``util_text_<cat>`` ~ ``tifa_<cat>``).
A column that takes one value over the trials has no correlation with anything: its entry says
``note = "no variation in <column> (every trial <value>)"`` and carries no numbers, never NaN.

Which text row of a trial (``text_at``):

- ``final``: the text row at the step of the trial's image row (the same checkpoint);
- ``early``: the trial's first rung row (its first text row at or after ``early_step``; the
  first text row when ``early_step`` is None): what the scheduler decided with. A proxy that
  ranks like the truth here is one the scheduler may prune with.

The table of a sweep lives beside its results, in the store's folder under ``_calibration/``
(``_calibration/sweep_id=<id>/calibration.parquet``, written to a temporary name and renamed
into place; readers of results never list it); :func:`analysis.connect` shows it as the view
``calibration``. The image stage of a sweep writes it by itself when it ends.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from numpy.typing import ArrayLike

from analysis.intervals import fmt_interval
from analysis.rows import last_rows
from analysis.store import _TMP_PREFIX, _publish
from analysis.store_schema import SWEEP_ID, BadFile
from sage_core.defs.errors import QueryError, StorageError
from sage_core.defs.metrics import CALIBRATION_PAIRS, lookup, sign

if TYPE_CHECKING:
    import duckdb

    from analysis.store import ResultStore

__all__ = ["calibration_report", "calibration_trials", "calibration_table", "kendall_tau_b", "spearman_rho",
           "bootstrap_interval", "write_calibration", "read_calibration", "calibration_path", "create_view",
           "COLUMNS", "TextAt", "calibration_display"]

TextAt = Literal["final", "early"]
CALIBRATION_DIR = "_calibration"
FILE_NAME = "calibration.parquet"
#: Columns of a calibration entry, in order.
COLUMNS: tuple[str, ...] = (
    "sweep_id", "text_at", "text", "image", "n", "expected", "kendall", "kendall_lo", "kendall_hi",
    "spearman", "spearman_lo", "spearman_hi", "note", "text_steps", "confidence", "resamples", "resamples_used",
    "seed",
)
_CHUNK = 2_000_000  # resamples x n x n elements per Kendall batch


# -- statistics (pure: arrays in, numbers out) -------------------------------------------------------
def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of ``x``, ``y`` [B, n]: ``sum_ij s_ij t_ij / sqrt(sum s^2 sum t^2)``
    with ``s_ij = sign(x_i - x_j)``, ``t_ij = sign(y_i - y_j)`` (ties count in neither sum); NaN for
    a row where either side takes one value."""
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    out = np.empty(len(x))
    step = max(1, _CHUNK // max(1, x.shape[1] ** 2))
    for a in range(0, len(x), step):
        sx = np.sign(x[a:a + step, :, None] - x[a:a + step, None, :])
        sy = np.sign(y[a:a + step, :, None] - y[a:a + step, None, :])
        den = np.sqrt((sx * sx).sum((1, 2)) * (sy * sy).sum((1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[a:a + step] = np.where(den > 0, (sx * sy).sum((1, 2)) / np.where(den > 0, den, 1), np.nan)
    return np.clip(out, -1.0, 1.0)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair [B, n]: the Pearson correlation of the average ranks; NaN
    for a row where either side takes one value."""
    from scipy.stats import rankdata  # lazy: scipy (~0.4 s), off `import analysis` and `sage` start-up

    rx = rankdata(np.atleast_2d(np.asarray(x, float)), axis=1)
    ry = rankdata(np.atleast_2d(np.asarray(y, float)), axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 1e-12, (rx * ry).sum(1) / np.where(den > 1e-12, den, 1), np.nan)
    return np.clip(r, -1.0, 1.0)


def bootstrap_interval(x: ArrayLike, y: ArrayLike, *, stat, resamples: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, int]:
    """Percentile-bootstrap interval of ``stat(x, y)`` over paired resamples of the n items:
    ``(lo, hi, resamples that had a value)``; ``(nan, nan, 0)`` when none had one."""
    if not 0 < confidence < 1:
        raise QueryError(f"confidence={confidence!r} is not allowed (allowed: between 0 and 1, e.g. 0.95)")
    if resamples < 1:
        raise QueryError(f"resamples={resamples!r} is not allowed (allowed: a whole number >= 1, e.g. 2000)")
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(xa), size=(resamples, len(xa)))
    vals = stat(xa[idx], ya[idx])
    vals = vals[~np.isnan(vals)]
    if len(vals) == 0:
        return math.nan, math.nan, 0
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    return float(lo), float(hi), int(len(vals))


# -- pairs and trials ---------------------------------------------------------------------------------
def _pairs(columns: Iterable[str], pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The requested pairs present in ``columns``, plus their family members present on both sides."""
    cols = set(columns)
    base = list(pairs if pairs is not None else CALIBRATION_PAIRS)
    out = [p for p in base if p[0] in cols and p[1] in cols]
    for text, image in base:
        fam_t, fam_i = lookup(text + "_x"), lookup(image + "_x")
        if fam_t is None or fam_i is None or fam_t.name != text + "_" or fam_i.name != image + "_":
            continue
        for c in sorted(cols):
            if not c.startswith(text + "_"):
                continue
            suffix = c[len(text) + 1:]
            other = f"{image}_{suffix}"
            entry_t, entry_i = lookup(c), lookup(other)
            if (other in cols and entry_t is not None and entry_t.name == text + "_"
                    and entry_i is not None and entry_i.name == image + "_"):
                out.append((c, other))
    return list(dict.fromkeys(out))


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, (bool, str)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _expected(text: str, image: str) -> int | None:
    try:
        return sign(text) * sign(image)
    except QueryError:  # a target metric (spread_ratio): no monotone expectation
        return None


def calibration_report(trials: Sequence[Mapping[str, Any]], *, pairs: Sequence[tuple[str, str]] | None = None,
                       seed: int = 0, resamples: int = 2000, confidence: float = 0.95) -> list[dict[str, Any]]:
    """One entry per (text, image) pair present in ``trials`` (one mapping per trial holding both its
    text and image values): ``{text, image, n, expected, kendall, kendall_lo, kendall_hi, spearman,
    spearman_lo, spearman_hi, note, confidence, resamples, resamples_used, seed}`` (see the module
    docstring). Fewer than 3 trials, or a column with one value, give numbers ``None`` and a note."""
    from scipy.stats import kendalltau, spearmanr  # lazy: scipy (~0.4 s), off `import analysis` and `sage` start-up

    keys: set[str] = set().union(*(t.keys() for t in trials)) if trials else set()
    out = []
    for text, image in _pairs(keys, pairs):
        xy = [(_number(t.get(text)), _number(t.get(image))) for t in trials]
        xy = [(a, b) for a, b in xy if a is not None and b is not None]
        entry: dict[str, Any] = {"text": text, "image": image, "n": len(xy), "expected": _expected(text, image),
                                 "kendall": None, "kendall_lo": None, "kendall_hi": None, "spearman": None,
                                 "spearman_lo": None, "spearman_hi": None, "note": None, "confidence": confidence,
                                 "resamples": resamples, "resamples_used": 0, "seed": seed}
        out.append(entry)
        flat = [f"{name} (every trial {vals[0]:.4g})" for name, vals in
                ((text, [a for a, _ in xy]), (image, [b for _, b in xy])) if len(set(vals)) == 1]
        if flat and len(xy) >= 2:
            entry["note"] = "no variation in " + " and ".join(flat)
            continue
        if len(xy) < 3:
            entry["note"] = f"needs 3 or more trials with both values (has {len(xy)})"
            continue
        x, y = np.array([a for a, _ in xy]), np.array([b for _, b in xy])
        entry["kendall"] = float(kendalltau(x, y).statistic)  # tau-b, the default variant
        entry["spearman"] = float(spearmanr(x, y).statistic)
        for name, stat in (("kendall", kendall_tau_b), ("spearman", spearman_rho)):
            lo, hi, used = bootstrap_interval(x, y, stat=stat, resamples=resamples, seed=seed, confidence=confidence)
            entry[f"{name}_lo"], entry[f"{name}_hi"] = lo, hi
            entry["resamples_used"] = used
    return out


def calibration_trials(rows: Iterable[Mapping[str, Any]], *, text_at: TextAt = "final",
                       early_step: int | None = None) -> list[dict[str, Any]]:
    """One record per trial with a finished image row: its image values, then the values of the text
    row ``text_at`` names (``final`` or ``early``, see the module docstring) where the image row
    has none, and ``_text_step`` (the step of that text row)."""
    if text_at not in ("final", "early"):
        raise QueryError(f"text_at={text_at!r} is not allowed (allowed: final, early)")
    rows = list(rows)
    text: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("fidelity") == "text":
            text.setdefault((r.get("sweep_id"), r.get("trial_id")), []).append(r)
    finished = (r for r in rows if r.get("status", "finished") == "finished")
    image = {(k[0], k[1]): r for k, r in last_rows(finished, fidelity="image").items()}
    out = []
    for key in sorted(image, key=lambda k: (str(k[0]), str(k[1]))):
        img = image[key]
        mine = sorted(text.get(key, []), key=lambda r: int(r["step"]))
        if text_at == "final":
            same = [r for r in mine if int(r["step"]) == int(img["step"])]
            pick = same[-1] if same else (mine[-1] if mine else None)
        else:
            later = [r for r in mine if early_step is None or int(r["step"]) >= early_step]
            pick = later[0] if later else None
        if pick is None:
            continue
        merged = {k: v for k, v in pick.items() if v is not None}
        merged.update({k: v for k, v in img.items() if v is not None})
        merged["_text_step"] = int(pick["step"])
        out.append(merged)
    return out


def calibration_table(rows: Iterable[Mapping[str, Any]], *, early_step: int | None = None,
                      pairs: Sequence[tuple[str, str]] | None = None, seed: int = 0, resamples: int = 2000,
                      confidence: float = 0.95) -> list[dict[str, Any]]:
    """Both views over the results ``rows`` of one sweep (``final`` entries, then ``early`` ones), in
    :data:`COLUMNS` order: the table the image stage stores."""
    rows = list(rows)
    sweep_ids = {r.get("sweep_id") for r in rows}
    if len(sweep_ids) > 1:
        raise QueryError(f"calibration_table: rows of {len(sweep_ids)} sweeps; pass one sweep's rows")
    sweep_id = next(iter(sweep_ids), None)
    out = []
    for text_at in ("final", "early"):
        trials = calibration_trials(rows, text_at=text_at, early_step=early_step)
        steps = sorted({t["_text_step"] for t in trials})
        span = "" if not steps else (str(steps[0]) if len(steps) == 1 else f"{steps[0]}..{steps[-1]}")
        for e in calibration_report(trials, pairs=pairs, seed=seed, resamples=resamples, confidence=confidence):
            full = {"sweep_id": sweep_id, "text_at": text_at, "text_steps": span, **e}
            out.append({c: full.get(c) for c in COLUMNS})
    return out


def calibration_display(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Display rows: ``kendall``/``spearman`` as ``0.612 [0.581, 0.640]``, or the note
    (``no variation in ...``) where there is no number."""
    out = []
    for e in entries:
        row = {k: ("" if e.get(k) is None else str(e.get(k))) for k in ("text_at", "text", "image", "n")}
        row["expected"] = {1: "+", -1: "-"}.get(e.get("expected", 0), "")
        for s in ("kendall", "spearman"):
            value = e.get(s)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                row[s] = "no variation" if str(e.get("note") or "").startswith("no variation") else "–"
            else:
                row[s] = fmt_interval(value, e.get(f"{s}_lo"), e.get(f"{s}_hi"))
        row["note"] = str(e.get("note") or "")
        out.append(row)
    return out


# -- the stored table -----------------------------------------------------------------------------------
def calibration_path(store: ResultStore, sweep_id: str) -> str:
    """Where the calibration table of ``sweep_id`` lives in ``store``'s folder."""
    return f"{store.path}/{CALIBRATION_DIR}/sweep_id={sweep_id}/{FILE_NAME}"


def _arrow(entries: Sequence[Mapping[str, Any]]) -> pa.Table:
    types = {"sweep_id": pa.string(), "text_at": pa.string(), "text": pa.string(), "image": pa.string(),
             "n": pa.int64(), "expected": pa.int64(), "note": pa.string(), "text_steps": pa.string(),
             "resamples": pa.int64(), "resamples_used": pa.int64(), "seed": pa.int64()}
    return pa.table({c: pa.array([e.get(c) for e in entries], type=types.get(c, pa.float64())) for c in COLUMNS})


def write_calibration(store: ResultStore, *, sweep_id: str, entries: Sequence[Mapping[str, Any]]) -> str:
    """Replace the calibration table of ``sweep_id`` atomically (temporary name, then rename);
    returns its path."""
    if not isinstance(sweep_id, str) or not SWEEP_ID.match(sweep_id):
        raise StorageError(f"sweep_id {sweep_id!r} is not allowed (allowed: letters, digits, '.', '_', '-', "
                         "starting with a letter or digit, at most 200 characters)")
    final = calibration_path(store, sweep_id)
    folder = final.rpartition("/")[0]
    table = _arrow([{**e, "sweep_id": sweep_id} for e in entries])
    try:
        store.filesystem.create_dir(folder, recursive=True)
        tmp = f"{folder}/{_TMP_PREFIX}{uuid.uuid4().hex}.inprogress"
        pq.write_table(table, tmp, filesystem=store.filesystem, compression="zstd")
        _publish(store.filesystem, tmp, final)
    except OSError as exc:
        raise StorageError(f"cannot write the calibration table under {folder!r}: {exc}") from exc
    return final


def read_calibration(store: ResultStore, *, skip_bad: bool = False) -> pa.Table:
    """Every sweep's calibration table in ``store`` (empty, with :data:`COLUMNS`, when there is none).
    An unreadable file or one without the columns raises :class:`StorageError`, unless ``skip_bad``."""
    root = f"{store.path}/{CALIBRATION_DIR}"
    try:
        infos = store.filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
    except OSError as exc:
        raise StorageError(f"cannot list {root!r}: {exc}") from exc
    tables, bad = [], []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or info.base_name != FILE_NAME:
            continue
        outside = store._escapes(info.path)
        if outside:
            bad.append(outside)
            continue
        try:
            t = pq.read_table(info.path, filesystem=store.filesystem)
        except (OSError, pa.ArrowException) as exc:
            bad.append(BadFile.unreadable(info.path, exc))
            continue
        missing = [c for c in COLUMNS if c not in t.column_names]
        if missing:
            bad.append(BadFile(info.path, f"not a calibration table: no column(s) {missing}"))
            continue
        try:
            tables.append(t.select(list(COLUMNS)).cast(_arrow([]).schema))
        except (pa.ArrowException, ValueError) as exc:
            bad.append(BadFile(info.path, f"calibration columns of the wrong type: {str(exc).splitlines()[0]}"))
    if bad:
        before = list(store.skipped)
        store.report_bad(bad, skip_bad=skip_bad)  # raises unless skip_bad
        store.skipped = before + list(bad)
    return pa.concat_tables(tables) if tables else _arrow([])


def create_view(con: duckdb.DuckDBPyConnection, store: ResultStore, *, skip_bad: bool = False) -> None:
    """The view ``calibration`` on ``con`` (before it is locked down): the store's calibration tables."""
    con.register("_calibration_arrow", read_calibration(store, skip_bad=skip_bad))
    con.execute("CREATE TABLE _calibration_rows AS SELECT * FROM _calibration_arrow")
    con.unregister("_calibration_arrow")
    con.execute("CREATE VIEW calibration AS SELECT * FROM _calibration_rows")
