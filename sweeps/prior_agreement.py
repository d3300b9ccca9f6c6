"""Does the earlier sweep's ranking hold in this one? The check a warm start makes while it runs.

Before a warm start, :mod:`sweeps.warm_start_signal` measures each objective's signal share in the
earlier sweep, but only when that sweep repeated training seeds; a sweep with one run per
configuration (the usual case) says nothing about its own seed noise. This sweep, though, reruns
configurations the earlier one ran, with another training seed when the search is model-based. Once
:data:`AFTER` configurations of the earlier sweep have finished here, their finals from both sweeps
are pooled as runs of one configuration and each objective's signal share (ICC(1), the same
:mod:`analysis.reliability` functions) is measured once; an objective below
:data:`~analysis.reliability.SIGNAL_THRESHOLD` gets one warning line on stderr. On the recorded
curves (``bench/bench_prior_agreement.py``) this flags the held-out table's safety objective (where
the warm start did worse than the grid) in 88% of arrival orders after four configurations, and the
development tables' (where it helped) in 20%, but also an objective whose warm start helped although
its ranking as a whole is mostly noise (75%): a hint to look, not a verdict, so the search goes on
unchanged.
The check prints one line with every objective's share whatever it finds.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from analysis.reliability import SIGNAL_THRESHOLD, low_signal_line, seeds_label, signal_share, signal_share_interval

from .resolved_trial import point_key
from .search import is_final_result
from .spec_model import SEED

if TYPE_CHECKING:
    from .warm_start import Prior

__all__ = ["PriorAgreement", "PriorAgreementCallback", "AFTER"]

AFTER = 4  # configurations run in both sweeps before the check

THEN = ("the warm start may be steering this search by noise (it can do worse than the plain grid); "
        "`sage reliability` on a sweep with `seeds: 2` measures it with more runs")

try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - ray is a dependency of sweeps
    _TuneCallback = object  # type: ignore[assignment,misc]


class PriorAgreement:
    """The check itself (no Tune): :meth:`observe` each finished trial of this sweep; the call that
    brings the :data:`AFTER`-th configuration the earlier sweep also finished returns :meth:`lines`,
    every other call none."""

    def __init__(self, prior: Prior, objectives: Sequence[str], *, after: int | None = None, resamples: int = 2000,
                 seed: int = 0):
        self.source, self.objectives = prior.source, list(objectives)
        self.after = AFTER if after is None else int(after)
        self.resamples, self.seed = resamples, seed
        self.keys = sorted({k for t in prior.trials for k in t.params} - {SEED})
        self.earlier: dict[str, list[Mapping[str, float]]] = {}
        for trial in prior.trials:
            if self._usable(trial.metrics):
                self.earlier.setdefault(self._key(trial.params), []).append(trial.metrics)
        self.here: dict[str, list[Mapping[str, float]]] = {}
        self.checked = False

    def _key(self, params: Mapping[str, Any]) -> str:
        return point_key({k: params.get(k) for k in self.keys})

    def _usable(self, metrics: Mapping[str, Any]) -> bool:
        """A finished run with a finite value of every objective (a stopped or diverged one says nothing)."""
        return all(isinstance(metrics.get(m), (int, float)) and math.isfinite(metrics[m]) for m in self.objectives)

    def observe(self, params: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
        if self.checked or not self._usable(metrics):
            return []
        key = self._key(params)
        if key not in self.earlier:
            return []
        self.here.setdefault(key, []).append({m: float(metrics[m]) for m in self.objectives})
        if len(self.here) < self.after:
            return []
        self.checked = True
        return self.lines()

    def lines(self) -> list[str]:
        """For the configurations seen so far (both sweeps' finals pooled): one line with every
        objective's signal share, then a warning line for each below the threshold."""
        runs = [(key, m) for key in self.here for m in [*self.earlier[key], *self.here[key]]]
        configs = [key for key, _ in runs]
        per_config = [len(self.earlier[key]) + len(self.here[key]) for key in self.here]
        shares = {metric: signal_share([float(m[metric]) for _, m in runs], configs) for metric in self.objectives}
        out = [f"warm start check, {len(self.here)} configurations run in both sweeps: signal share "
               + ", ".join(f"{metric} {share:.2f}" if math.isfinite(share) else f"{metric} n/a (no spread)"
                           for metric, share in shares.items())
               + f" (both sweeps' finals pooled; below {SIGNAL_THRESHOLD} is mostly seed noise)"]
        for metric, share in shares.items():
            values = [float(m[metric]) for _, m in runs]
            if math.isfinite(share) and share < SIGNAL_THRESHOLD:
                lo, hi = signal_share_interval(values, configs, resamples=self.resamples, seed=self.seed)
                out.append(low_signal_line(
                    metric, share=share, lo=lo, hi=hi, seeds=seeds_label(per_config), configs=len(self.here),
                    where=f" between the earlier sweep {self.source} and this one (the first {len(self.here)} "
                          "configurations both ran, their runs pooled)", then=THEN))
        return out


class PriorAgreementCallback(_TuneCallback):
    """:class:`PriorAgreement` in a running sweep: each trial's final result (its config holds the
    spec's dimensions), the lines printed to stderr."""

    def __init__(self, agreement: PriorAgreement):
        self.agreement = agreement

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = getattr(trial, "last_result", None) or {}
        if is_final_result(result):
            for line in self.agreement.observe(dict(trial.config or {}), result):
                print(line, file=sys.stderr, flush=True)
