"""Search efficiency of Pareto successive halving on a cheap analytical two-objective problem.

A grid of 24 configurations (lambda_esp x lambda_lsa), each a learning curve towards a known
final (asr, util): asr(t) = a + (0.8 - a) e^{-t/tau}, util(t) = u + (0.95 - u) e^{-t/tau}, with
a = 0.5 / (1 + e) + 0.1 l, u = 0.9 - 0.08 e + 0.3 l - l^2, tau = 4 + 2 e (stronger regularisers learn
slower, so rung ranks are not final ranks). Three arms, each reporting hypervolume (moocore, reference
point (1, 0) in (asr, -util)) of its finished trials' final points and its compute in trial-steps:
  full grid   every configuration to the end
  pareto-SH   the real ParetoSuccessiveHalving.decide() at rungs 1, 3 and 9 (eta 3: the geometric SH ladder 1-3-9-27), asynchronous,
              4 workers, trials started in a shuffled grid order (mean over 5 shuffles)
  optuna      NSGA-II / TPE (real Optuna, no early stopping) with the same compute as pareto-SH
Run: .venv/bin/python bench/bench_sweep_search.py
"""

from __future__ import annotations

import heapq
import itertools
import math

import moocore
import numpy as np
import optuna

from sweeps.pareto_scheduler import ParetoSuccessiveHalving

R = 27
EVALS = (1, 3, 9, 27)
E_VALUES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
L_VALUES = (0.0, 0.05, 0.1, 0.2)
REF = np.array([1.0, 0.0])


def objectives(e: float, l: float, t: int) -> tuple[float, float]:
    a = 0.5 / (1 + e) + 0.1 * l
    u = 0.9 - 0.08 * e + 0.3 * l - l * l
    w = math.exp(-t / (4 + 2 * e))
    return a + (0.8 - a) * w, u + (0.95 - u) * w


def hv(points: list[tuple[float, float]]) -> float:
    pts = np.asarray([[a, -u] for a, u in points])
    return float(moocore.hypervolume(pts, ref=REF)) if len(pts) else 0.0


def full_grid() -> tuple[float, int]:
    pts = [objectives(e, l, R) for e, l in itertools.product(E_VALUES, L_VALUES)]
    return hv(pts), len(pts) * R


def pareto_sh(seed: int, workers: int = 4) -> tuple[float, int]:
    sched = ParetoSuccessiveHalving(metrics=["asr", "util"], modes=["min", "max"], rungs=[1, 3, 9], eta=3)
    configs = list(itertools.product(E_VALUES, L_VALUES))
    order = np.random.default_rng(seed).permutation(len(configs))
    queue = [configs[i] for i in order]
    events: list[tuple[int, int, int]] = []  # (time, trial, step)
    clock, steps, finished, tid = 0, 0, [], 0
    running: dict[int, tuple[tuple[float, float], int]] = {}

    def start(now: int) -> None:
        nonlocal tid
        cfg = queue.pop(0)
        running[tid] = (cfg, now)
        heapq.heappush(events, (now + EVALS[0], tid, EVALS[0]))
        tid += 1

    for _ in range(workers):
        start(0)
    while events:
        clock, t, step = heapq.heappop(events)
        (e, l), began = running[t]
        asr, util = objectives(e, l, step)
        decision = sched.decide(str(t), {"step": step, "total_steps": R, "asr": asr, "util": util})
        if step == R or decision == "STOP":
            steps += step
            if step == R:
                finished.append((asr, util))
            del running[t]
            if queue:
                start(clock)
        else:
            nxt = EVALS[EVALS.index(step) + 1]
            heapq.heappush(events, (clock + nxt - step, t, nxt))
    return hv(finished), steps


def optuna_arm(n_trials: int, sampler: optuna.samplers.BaseSampler) -> tuple[float, int]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    pts = []
    for _ in range(n_trials):
        trial = study.ask({"e": optuna.distributions.CategoricalDistribution(E_VALUES),
                           "l": optuna.distributions.CategoricalDistribution(L_VALUES)})
        a, u = objectives(trial.params["e"], trial.params["l"], R)
        study.tell(trial, [a, u])
        pts.append((a, u))
    return hv(pts), n_trials * R


def main() -> None:
    hv_grid, steps_grid = full_grid()
    runs = [pareto_sh(seed) for seed in range(5)]
    hv_sh = float(np.mean([r[0] for r in runs]))
    steps_sh = float(np.mean([r[1] for r in runs]))
    n_opt = max(1, round(steps_sh / R))
    opt = {name: np.mean([optuna_arm(n_opt, mk(s))[0] for s in range(5)], axis=0)
           for name, mk in {"optuna-nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=4),
                            "optuna-tpe": lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=4)}.items()}
    print(f"{'arm':<14}{'HV':>9}{'HV/grid':>9}{'trial-steps':>13}{'compute/grid':>14}")
    print(f"{'full grid':<14}{hv_grid:>9.4f}{1.0:>9.3f}{steps_grid:>13d}{1.0:>14.3f}")
    print(f"{'pareto-SH':<14}{hv_sh:>9.4f}{hv_sh / hv_grid:>9.3f}{steps_sh:>13.1f}{steps_sh / steps_grid:>14.3f}")
    for name, h in opt.items():
        print(f"{name:<14}{h:>9.4f}{h / hv_grid:>9.3f}{n_opt * R:>13d}{n_opt * R / steps_grid:>14.3f}")
    print("pareto-SH per shuffle (HV/grid, compute/grid): "
          + ", ".join(f"({h / hv_grid:.3f}, {s / steps_grid:.3f})" for h, s in runs))
    ok = hv_sh / hv_grid >= 0.95 and steps_sh / steps_grid <= 0.40
    print(f"target HV >= 95% of grid at <= 40% compute: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
