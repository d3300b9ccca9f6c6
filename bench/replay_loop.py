"""The event loop of the search replay bench: Ray Tune's execution, replayed on a curves table.

``workers`` trials run at a time. A trial advances one training step per time unit and is evaluated
only at the steps its method reads (``Method.eval_steps``; the last is the run length); each
evaluation occupies the worker for ``table.eval_cost`` time units and then reports. At a report the
method answers continue, stop or pause; a paused trial frees its worker and may be resumed later
from the step it reached (Tune restores its checkpoint). A freed worker asks the method for the
next trial, which may be ``None`` (nothing to start now; asked again after the next report).
Compute = the sum over running trials of elapsed time, in training-step equivalents.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from dataclasses import dataclass, field

from replay_table import CurveTable, Scorer


@dataclass
class Trace:
    """What a method achieved: (compute spent, configuration) at each trial that reached T."""

    completions: list[tuple[float, int]] = field(default_factory=list)
    compute: float = 0.0  # spent when the method stopped (or hit the cap)
    evaluations: int = 0

    def fractions(self, scorer: Scorer, budgets: tuple[float, ...], grid_compute: float) -> list[float]:
        out = []
        for b in budgets:
            done = [c for spent, c in self.completions if spent <= b * grid_compute + 1e-9]
            out.append(scorer.fraction(done) if done else 0.0)
        return out


class Method:
    """One search method in the replay: which trial next, and what to do with a report."""

    eval_steps: tuple[int, ...] = ()  # steps where its trials are evaluated; () = the run length only

    def next_trial(self) -> tuple[str, int] | None:  # (trial id, config); a paused id resumes it
        raise NotImplementedError

    def report(self, trial: str, config: int, step: int, result: dict[str, float]) -> bool | str:
        return True  # True/"continue", False/"stop", or "pause"

    def finish(self, trial: str, config: int, result: dict[str, float], *, completed: bool) -> None:
        pass


@dataclass
class _Run:
    config: int
    step: int  # the step reached (its evaluation done)
    seq: int


def replay(table: CurveTable, method: Method, *, workers: int, cap: float) -> Trace:
    """Run ``method`` on ``workers`` until it has no trial left or has spent ``cap``."""
    evals = sorted(set(method.eval_steps) | {table.total})
    if not set(evals) <= set(table.steps):
        raise ValueError(f"{type(method).__name__}.eval_steps={list(method.eval_steps)}: not recorded steps "
                         f"{list(table.steps)}")
    events: list[tuple[float, int, str]] = []  # (time, sequence, trial id)
    running: dict[str, _Run] = {}
    paused: dict[str, _Run] = {}
    trace, now, seq = Trace(), 0.0, itertools.count()

    def schedule(trial: str) -> None:
        run = running[trial]
        nxt = evals[bisect.bisect_right(evals, run.step)]
        heapq.heappush(events, (now + (nxt - run.step) + table.eval_cost, run.seq, trial))

    def launch() -> None:
        while len(running) < workers and trace.compute < cap:
            nxt = method.next_trial()
            if nxt is None:
                return
            trial, config = nxt
            running[trial] = paused.pop(trial, None) or _Run(config=config, step=0, seq=next(seq))
            schedule(trial)

    launch()
    while events:
        t, _, trial = heapq.heappop(events)
        trace.compute += len(running) * (t - now)
        now = t
        run = running[trial]
        run.step = evals[bisect.bisect_right(evals, run.step)]
        trace.evaluations += 1
        result = table.result(run.config, run.step)
        final = run.step == table.total
        answer = method.report(trial, run.config, run.step, result)
        if answer in (True, "continue") and not final:
            schedule(trial)
            continue
        del running[trial]
        if answer == "pause" and not final:
            paused[trial] = run
        else:
            method.finish(trial, run.config, result, completed=final)
            if final:
                trace.completions.append((trace.compute, run.config))
        launch()
    return trace
