"""Is the earlier sweep's ranking signal or seed noise? The warning a warm start prints first.

A warm start passes on the earlier sweep's ranking of configurations by each objective. Where that
ranking is mostly training-seed noise, the search is steered by noise, and a warm start can do worse
than the plain grid (``bench/RESULTS.md``, the held-out table: signal share 0.13 against 0.74 where it
helped). When the earlier trials this warm start uses hold at least two training seeds of at least
two configurations, each objective's signal share (ICC(1) over training seeds, with its bootstrap
interval) is measured on their final values with :mod:`analysis.reliability`'s own functions, on the
rows the warm start has already read; a share below :data:`~analysis.reliability.SIGNAL_THRESHOLD`
gives one warning line (:func:`~analysis.reliability.low_signal_line`). With one seed per
configuration the share cannot be measured and nothing is said. A warning, never a refusal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from analysis.reliability import SIGNAL_THRESHOLD, low_signal_line, seeds_label, signal_share, signal_share_interval

from .resolved_trial import point_key
from .spec_model import SEED

if TYPE_CHECKING:
    from .warm_start import Prior

__all__ = ["seed_noise_lines", "MIN_REPEATED"]

MIN_REPEATED = 2  # configurations with two or more training seeds before the share is estimated

THEN = "a warm start from that sweep may not help (it may do worse than the plain grid)"


def _runs(prior: Prior) -> list[tuple[str, str, dict[str, float]]]:
    """``(configuration, training seed, final objective values)`` of each finished earlier trial the
    warm start uses, one per (configuration, seed) as :func:`analysis.reliability.reliability_table`
    keeps them: a repeat of the same seed says nothing about seed noise. The configuration is the
    trial's parameters in this spec's space, the seed aside (every other setting is this spec's: the
    warm start checked it); a trial whose rows (none: a :class:`Prior` built without them) store no
    seed counts as a seed of its own."""
    runs, seen = [], set()
    for i, trial in enumerate(prior.trials):
        if not trial.finished:
            continue
        rows = prior.stored[i] if i < len(prior.stored) else ()
        config = point_key({k: v for k, v in trial.params.items() if k != SEED})
        seed = next((str(r[SEED]) for r in rows if r.get(SEED) is not None),
                    str(trial.params[SEED]) if trial.params.get(SEED) is not None else f"trial {i}")
        if (config, seed) not in seen:
            seen.add((config, seed))
            runs.append((config, seed, trial.metrics))
    return runs


def seed_noise_lines(prior: Prior, objectives: Sequence[str], *, resamples: int = 2000,
                     seed: int = 0) -> list[str]:
    """One warning line per objective whose signal share over ``prior``'s finished trials is below the
    threshold (module docstring); none when fewer than :data:`MIN_REPEATED` configurations have two
    training seeds or more. ``resamples`` / ``seed``: the bootstrap of the interval."""
    runs = _runs(prior)
    seeds = Counter(config for config, _, _ in runs)
    if sum(n >= 2 for n in seeds.values()) < MIN_REPEATED:
        return []
    configs = [config for config, _, _ in runs]
    lines = []
    for metric in objectives:
        values = [metrics[metric] for _, _, metrics in runs]
        share = signal_share(values, configs)
        if math.isfinite(share) and share < SIGNAL_THRESHOLD:
            lo, hi = signal_share_interval(values, configs, resamples=resamples, seed=seed)
            lines.append(low_signal_line(
                metric, share=share, lo=lo, hi=hi, seeds=seeds_label(list(seeds.values())),
                configs=len(seeds), where=f" in the earlier sweep {prior.source}", then=THEN))
    return lines
