"""The ``ehvi`` search as a Tune ``Searcher``: which proposal runs next (sweeps/mf_search.py explains
the rule). A searcher, not a scheduler, because Tune starts every PENDING trial as soon as resources
allow (``TuneController._maybe_add_actors``): only ``suggest`` decides which configuration exists.

The proposals are what Tune's variant generator would make of the spec's space (the grid points x
``num_samples``, or ``num_samples`` seeded draws); ``suggest`` hands out one per call, by expected
hypervolume gain, and ``Searcher.FINISHED`` when none is left. Tune's ``max_concurrent_trials``
wraps it in a ``ConcurrencyLimiter``. A trial counts as finished when its last result has
``step >= total_steps``; one stopped early (a pruning scheduler) leaves no final value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from .mf_search import MIN_FIT, MIN_GAIN, SAMPLES, ParetoGainModel, PriorTrial

__all__ = ["EhviSearcher", "proposals"]


def proposals(param_space: Mapping[str, Any], *, num_samples: int, seed: int | None) -> list[dict[str, Any]]:
    """The configurations Tune's variant generator makes of ``param_space`` (``tune.grid_search`` and
    sampled domains), ``num_samples`` times, in a seeded random order (a grid's own order would make
    the first trials neighbours)."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for _ in range(num_samples):
        out += [dict(config) for _, config in generate_variants(dict(param_space), random_state=rng)]
    return [out[i] for i in rng.permutation(len(out))]


class EhviSearcher(Searcher):
    """Suggest the proposal with the largest expected hypervolume gain once :data:`MIN_FIT` finals (a
    warm start's prior included) exist; before, the proposals in their order.

    Args (keyword-only): ``candidates`` (the proposals, in their proposed order: ties go to the
    earlier), ``metrics`` / ``modes``, ``prior`` (see :class:`sweeps.mf_search.PriorTrial`), ``reused``
    (earlier runs this sweep takes as its own instead of running them again: they train the surrogate
    and stand on this sweep's front), ``seed``,
    ``min_gain`` (stop suggesting when no proposal is expected to add this share of the front's
    hypervolume; 0 = run them all), ``samples``, ``time_attr`` / ``total_attr``.
    """

    def __init__(self, *, candidates: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str],
                 prior: Sequence[PriorTrial] = (), reused: Sequence[PriorTrial] = (), seed: int = 0,
                 min_gain: float = MIN_GAIN, samples: int = SAMPLES, time_attr: str = "step",
                 total_attr: str = "total_steps"):
        super().__init__(metric=None, mode=None)
        self.model = ParetoGainModel(metrics=metrics, modes=modes, prior=prior, seed=seed, min_gain=min_gain,
                                     samples=samples)
        self.candidates = [dict(c) for c in candidates]
        for i, c in enumerate(self.candidates):
            self.model.add(f"c{i}", c)
        for i, t in enumerate(reused):  # runs of the earlier sweep this sweep takes as its own (same seed)
            self.model.add(f"r{i}", t.params)
            self.model.observe_final(f"r{i}", t.metrics)
        self.left = [f"c{i}" for i in range(len(self.candidates))]
        self.running: dict[str, str] = {}  # trial id -> candidate id
        self.done: list[str] = []
        self.time_attr, self.total_attr = time_attr, total_attr

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        # Searcher.FINISHED (a str) ends the search, as Ray documents; its annotation omits it
        if not self.left:
            return Searcher.FINISHED  # type: ignore[return-value]
        if len(self.model.final) < MIN_FIT:  # nothing to fit on yet: the proposals' (seeded random) order
            pick: str | None = self.left[0]
        else:
            pick = self.model.choose(self.left, believed=list(self.running.values()))
            if pick is None:  # min_gain > 0 and nothing is expected to add enough
                return None if self.running else Searcher.FINISHED  # type: ignore[return-value]
        assert pick is not None
        self.left.remove(pick)
        self.running[trial_id] = pick
        return dict(self.candidates[int(pick[1:])])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pick = self.running.pop(trial_id, None)
        if pick is None:
            return
        self.done.append(pick)
        if not error and result and result.get(self.time_attr) is not None \
                and result.get(self.total_attr) is not None and result[self.time_attr] >= result[self.total_attr] \
                and all(math.isfinite(float(result.get(m, math.nan))) for m in self.model.metrics):
            self.model.observe_final(pick, result)  # a non-finite objective teaches the surrogate nothing

    def save(self, checkpoint_path: str) -> None:
        """JSON (never a pickle): what was handed out and the finals seen, so a resumed driver goes on."""
        state = {"left": self.left, "running": self.running, "done": self.done,
                 "final": {k: [float(x) for x in v] for k, v in self.model.final.items() if not k.startswith("prior:")}}
        Path(checkpoint_path).write_text(json.dumps(state), encoding="utf-8")

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text(encoding="utf-8"))
        self.left, self.running, self.done = state["left"], state["running"], state["done"]
        # a trial running when the driver stopped is resumed by Tune under its id: it stays running
        # finals of trials this searcher knows (its proposals, the runs it reused)
        self.model.final.update({k: np.asarray(v) for k, v in state["final"].items() if k in self.model.params})
