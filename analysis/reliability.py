"""How far a sweep's objectives can be trusted: seed noise, rung-to-final agreement, resolution.

A sweep ranks configurations by objectives measured once per training run. When a spec asks for
``seeds: N``, each configuration is trained N times with different training seeds and evaluated on
the same prompts, and the store's ``seed`` column tells the repeats apart. Per objective:

- **signal share**: a one-way random-effects analysis of variance over the configurations (each
  trial's value at the run's final step; a configuration = equal hyperparameter columns, ``seed``
  aside). With ``a`` configurations, ``N`` runs, ``n_i`` runs of configuration ``i``,
  ``MSB = sum_i n_i (mean_i - mean)^2 / (a - 1)``, ``MSW = sum_ij (y_ij - mean_i)^2 / (N - a)`` and
  ``n0 = (N - sum_i n_i^2 / N) / (a - 1)``, the between-configuration variance component is
  ``s_b^2 = (MSB - MSW) / n0`` and the seed variance ``s_w^2 = MSW``. The signal share is the
  intraclass correlation ``ICC(1) = s_b^2 / (s_b^2 + s_w^2)``: the share of the spread between
  single runs of different configurations that the configurations cause (below 0: none
  detectable). Its interval is a percentile bootstrap over configurations (each drawn with all
  its seeds; seeded). Below :data:`SIGNAL_THRESHOLD` most of an objective's spread is seed noise.
- **rung-to-final agreement**: Kendall's tau-b (``scipy.stats.kendalltau``) between each trial's
  value at an earlier evaluation step and at its final one, over the trials that reached both:
  what a scheduler deciding at that rung sees of the final order.
- **smallest resolvable difference**: the 95% least significant difference between two
  configuration means of ``n`` seeds each, ``t_{0.975, N - a} * sqrt(2 MSW / n)`` (``n``: the
  harmonic mean of the seeds per configuration), and between two single runs (``n = 1``). Prompt
  noise is not in it: every trial is scored on the same prompts, so it cancels in a difference
  (:mod:`analysis.paired_compare` measures what is left of it).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from analysis.ablation import hyperparameters
from analysis.column_roles import roles_of
from analysis.views import Source, columns_of, open_source, require_columns
from sage_core.defs.metrics import DEFAULT_OBJECTIVES, lookup, objective_metrics

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Anova", "one_way_anova", "signal_share", "signal_share_interval", "least_significant_difference",
           "rung_agreement", "reliability_table", "low_signal_line", "low_signal_lines", "SIGNAL_THRESHOLD",
           "COLUMNS_NOTE"]

SIGNAL_THRESHOLD = 0.5
SEED = "seed"
#: What the columns of :func:`reliability_table` mean (``sage reliability`` and the report print it).
COLUMNS_NOTE = ("signal_share: share of the spread between single runs of different configurations that the "
                "configurations cause (ICC(1) over training seeds) [95% bootstrap over configurations]; seed_sd: "
                "seed-to-seed standard deviation; lsd / lsd_1: smallest difference resolved (95%) between two "
                "configuration means of the sweep's seeds / two single runs; tau@S: Kendall tau of each trial's value "
                "at step S against its final value")


@dataclass(frozen=True)
class Anova:
    """One-way random-effects ANOVA of runs grouped by configuration (module docstring)."""

    configs: int
    runs: int
    msb: float
    msw: float
    n0: float

    @property
    def df_within(self) -> int:
        return self.runs - self.configs

    @property
    def between(self) -> float:
        """The between-configuration variance component ``(MSB - MSW) / n0``."""
        return (self.msb - self.msw) / self.n0 if self.configs > 1 and self.df_within > 0 else float("nan")

    @property
    def share(self) -> float:
        """``ICC(1) = s_b^2 / (s_b^2 + s_w^2)``; NaN without two configurations and a repeated seed."""
        total = self.between + self.msw
        return self.between / total if total > 0 else float("nan")


def _sums(values: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: runs, sum, sum of squares (groups in sorted order) of the values centred on their
    mean (the ANOVA does not depend on a shift; centring keeps the sums of squares exact)."""
    v = np.asarray(values, dtype=float)
    v = v - v.mean() if v.size else v
    _, first, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_index=True, return_inverse=True)
    a = len(first)
    return (np.bincount(codes, minlength=a).astype(float), np.bincount(codes, v, minlength=a),
            np.bincount(codes, v * v, minlength=a))


def _anova_from_sums(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(msb, msw, n0, a, N)`` along the last axis of group sums (vectorised over replicates)."""
    a = (n > 0).sum(axis=-1)
    total_n = n.sum(axis=-1)
    means_sq = np.where(n > 0, s * s / np.where(n > 0, n, 1), 0.0).sum(axis=-1)
    ssw = q.sum(axis=-1) - means_sq
    ssb = means_sq - s.sum(axis=-1) ** 2 / total_n
    with np.errstate(divide="ignore", invalid="ignore"):
        msb = ssb / (a - 1)
        msw = np.maximum(ssw, 0.0) / (total_n - a)
        n0 = (total_n - (n * n).sum(axis=-1) / total_n) / (a - 1)
    return msb, msw, n0, a, total_n


def one_way_anova(values: ArrayLike, groups: ArrayLike) -> Anova:
    """The ANOVA of ``values`` grouped by ``groups`` (any hashable labels)."""
    msb, msw, n0, a, total = _anova_from_sums(*_sums(values, groups))
    return Anova(configs=int(a), runs=int(total), msb=float(msb), msw=float(msw), n0=float(n0))


def signal_share(values: ArrayLike, groups: ArrayLike) -> float:
    """``ICC(1)`` of ``values`` grouped by configuration (:class:`Anova`)."""
    return one_way_anova(values, groups).share


def signal_share_interval(values: ArrayLike, groups: ArrayLike, *, resamples: int = 2000, seed: int = 0,
                          confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`signal_share` over configurations (each drawn
    with all its runs; a configuration drawn twice counts as two)."""
    n, s, q = _sums(values, groups)
    pick = np.random.default_rng(seed).integers(0, len(n), size=(resamples, len(n)))
    msb, msw, n0, a, _ = _anova_from_sums(n[pick], s[pick], q[pick])
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (msb - msw) / n0
        share = between / (between + msw)
    share = share[np.isfinite(share)]
    if len(share) < resamples / 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(share, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return float(lo), float(hi)


def least_significant_difference(anova: Anova, *, seeds: float, confidence: float = 0.95) -> float:
    """``t_{(1+c)/2, N - a} * sqrt(2 MSW / seeds)``: the smallest difference between two means of
    ``seeds`` runs that a two-sided test at level ``1 - c`` resolves."""
    from scipy import stats  # lazy: scipy (~0.4 s), off `import analysis` and `sage` start-up

    if anova.df_within < 1:
        return float("nan")
    return float(stats.t.ppf((1 + confidence) / 2, anova.df_within) * np.sqrt(2 * anova.msw / seeds))


def rung_agreement(trials: pd.DataFrame, *, value: str = "value") -> dict[int, tuple[float, int]]:
    """``{step: (tau_b, trials)}`` between each trial's ``value`` at ``step`` and at its final step.

    ``trials``: columns ``trial``, ``step``, ``final_step`` and ``value``; only steps before the
    final one, and only steps that at least three trials reached, get a tau."""
    from scipy import stats  # lazy: scipy (~0.4 s), off `import analysis` and `sage` start-up

    final = trials[trials["step"] == trials["final_step"]].set_index("trial")[value]
    out: dict[int, tuple[float, int]] = {}
    early = trials[trials["step"] < trials["final_step"]]
    for step, rows in early.groupby(early["step"].astype(int)):
        both = rows[rows["trial"].isin(final.index)]
        if len(both) >= 3:
            tau = stats.kendalltau(both[value].to_numpy(), final.loc[both["trial"]].to_numpy()).statistic
            out[int(step)] = (float(tau), len(both))
    return out


def _objectives(con, cols: list[str], objectives: Sequence[str] | None) -> list[str]:
    """The objectives asked for; else the sweep's (its schema.json); else every graded objective
    of the registry that the store holds, the default pair first."""
    if objectives is None:
        roles = roles_of(con)
        objectives = list(roles.objectives) if roles is not None and roles.objectives else \
            list(dict.fromkeys([*DEFAULT_OBJECTIVES, *objective_metrics()]))
        objectives = [m for m in objectives if m in cols]

    require_columns(list(objectives), available=cols, kind="objective column")
    return list(objectives)


def _runs(con, metric: str, *, hyper: list[str], cols: list[str]) -> pd.DataFrame:
    """One row per (trial, step) holding ``metric``: ``trial``, ``config``, ``seed``, ``step``,
    ``final_step`` (the last step of the trial's configuration) and ``value``; one trial per
    (configuration, seed): a repeat of the same seed adds no information about seed noise."""
    q = lambda c: '"' + c.replace('"', '""') + '"'  # noqa: E731
    keep = ["sweep_id", "trial_id", "step", *([SEED] if SEED in cols else []), *hyper]
    where = f"{q(metric)} IS NOT NULL AND NOT isnan(CAST({q(metric)} AS DOUBLE))"
    if "status" in cols:
        where += " AND status IS DISTINCT FROM 'failed'"
    if "fidelity" in cols and (entry := lookup(metric)) is not None:
        where += " AND fidelity = " + ("'image'" if entry.fidelity == "image" else "'text'")
    df = con.sql(f"SELECT {', '.join(q(c) for c in keep)}, CAST({q(metric)} AS DOUBLE) AS value "
                 f"FROM results WHERE {where} ORDER BY sweep_id, trial_id, step").df()
    df["trial"] = df["sweep_id"].astype(str) + "/" + df["trial_id"].astype(str)
    df["config"] = [json.dumps(list(r), default=str) for r in df[hyper].itertuples(index=False)] if hyper else "{}"
    df["seed"] = df[SEED].astype(str) if SEED in cols else df["trial"]  # no seed column: no repeats known
    first = df.drop_duplicates(["config", "seed"])["trial"]
    df = df[df["trial"].isin(first)].copy()
    df["final_step"] = df.groupby("config")["step"].transform("max")
    return df[["trial", "config", "seed", "step", "final_step", "value"]]


def reliability_table(source: Source, *, objectives: Sequence[str] | None = None, resamples: int = 2000,
                      seed: int = 0, confidence: float = 0.95, skip_bad: bool = False) -> pd.DataFrame:
    """One row per objective: ``objective``, ``better``, ``configs``, ``seeds`` (per configuration,
    ``2`` or ``1-3``), ``signal_share`` with ``signal_share_lo``/``_hi``, ``seed_sd`` (sqrt MSW),
    ``lsd`` (two means of the sweep's seeds) and ``lsd_1`` (two single runs), then ``tau@<step>``
    per earlier evaluation step (module docstring). ``attrs["notes"]`` says what could not be
    estimated and why."""
    import pandas as pd  # lazy: pandas (~0.15 s), off `import analysis` and `sage` start-up

    con, owned = open_source(source, skip_bad=skip_bad)
    try:
        cols = columns_of(con, "results")
        metrics = _objectives(con, cols, objectives)
        hyper = [h for h in hyperparameters(cols, roles_of(con)) if h != SEED]
        runs = {m: _runs(con, m, hyper=hyper, cols=cols) for m in metrics}
    finally:
        if owned:
            con.close()
    rows, notes = [], []
    for m, df in runs.items():
        final = df[df["step"] == df["final_step"]]
        anova = one_way_anova(final["value"], final["config"])
        per_config = final.groupby("config")["seed"].nunique()
        n_h = float(len(per_config) / (1.0 / per_config).sum()) if len(per_config) else float("nan")
        lo, hi = (signal_share_interval(final["value"], final["config"], resamples=resamples, seed=seed,
                                        confidence=confidence) if anova.df_within > 0 else (np.nan, np.nan))
        entry = lookup(m)
        row: dict[str, Any] = {
            "objective": m, "better": entry.better if entry else "?", "configs": anova.configs,
            "seeds": seeds_label(per_config),
            "signal_share": anova.share, "signal_share_lo": lo, "signal_share_hi": hi,
            "seed_sd": float(np.sqrt(anova.msw)) if anova.df_within > 0 else np.nan,
            "lsd": least_significant_difference(anova, seeds=n_h, confidence=confidence),
            "lsd_1": least_significant_difference(anova, seeds=1.0, confidence=confidence)}
        for step, (tau, _) in sorted(rung_agreement(df).items()):
            row[f"tau@{step}"] = tau
        rows.append(row)
        if anova.df_within < 1:
            notes.append(f"{m}: one training seed per configuration; the signal share and the smallest "
                         "resolvable difference need repeats (spec: seeds: N, N >= 2)")
    table = pd.DataFrame(rows)
    taus = sorted((c for c in table.columns if c.startswith("tau@")), key=lambda c: int(c[4:]))
    table = table[[c for c in table.columns if not c.startswith("tau@")] + taus]
    table.attrs["notes"] = notes
    return table


def seeds_label(per_config: Collection[int]) -> str:
    """Training seeds per configuration as the tables print them: ``2``, ``1-3`` (fewest-most), ``0``."""
    if not len(per_config):
        return "0"
    fewest, most = min(per_config), max(per_config)
    return f"{fewest}" if fewest == most else f"{fewest}-{most}"


def low_signal_line(metric: str, *, share: float, seeds: str, configs: int, lo: float | None = None,
                    hi: float | None = None, where: str = "", then: str = "") -> str:
    """The one-line warning for an objective whose signal share is below :data:`SIGNAL_THRESHOLD`
    (``where``: after the metric's name, e.g. `` at step 12``; ``then``: what follows for the caller)."""
    interval = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None and np.isfinite([lo, hi]).all() else ""
    return (f"warning: {metric}{where}: signal share {share:.2f}{interval} (training seeds {seeds} x {configs} "
            f"configurations) is below {SIGNAL_THRESHOLD}: most of its spread between configurations is seed "
            "noise, so rankings by it are unreliable" + (f"; {then}" if then else ""))


def low_signal_lines(table: pd.DataFrame) -> list[str]:
    """:func:`low_signal_line` for every row of a :func:`reliability_table` below the threshold."""
    return [low_signal_line(r["objective"], share=r["signal_share"], seeds=str(r["seeds"]), configs=int(r["configs"]),
                            lo=r["signal_share_lo"], hi=r["signal_share_hi"])
            for _, r in table.iterrows() if np.isfinite(r["signal_share"]) and r["signal_share"] < SIGNAL_THRESHOLD]
