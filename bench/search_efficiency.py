"""Search efficiency of the samplers a sweep can use, on a standard 2-objective test function (ZDT1 in
6 dimensions, both minimised): how many trials each needs to reach the hypervolume random search has
after 64 trials, median over 5 seeds. Goal: the sampler a sweep uses by default on a space larger than its
trials (`auto` picks TPE there) needs <= 32.

The samplers are built by `orchestrator.sweep.make_sampler`, exactly as a sweep builds them.

    python -m bench.search_efficiency [--trials 64] [--seeds 5]
"""
from __future__ import annotations

import argparse
import math
import statistics

import optuna

from analysis import pareto
from bench.common import record
from orchestrator import config
from orchestrator.sweep.plan import make_plan, sampler_name as chosen_sampler
from orchestrator.sweep.space import make_sampler

DIMS = 6
REFERENCE = [1.1, 11.0]  # worse than every ZDT1 point in [0, 1]^6


def zdt1(x: list[float]) -> tuple[float, float]:
    f1 = x[0]
    g = 1 + 9 * sum(x[1:]) / (len(x) - 1)
    return f1, g * (1 - math.sqrt(f1 / g))


def hypervolume_curve(sampler_name: str, seed: int, trials: int) -> list[float]:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(sampler_name, seed, trials))
    study.optimize(lambda t: zdt1([t.suggest_float(f"x{i}", 0, 1) for i in range(DIMS)]), n_trials=trials)
    values = [t.values for t in study.trials]
    return [pareto.hypervolume(values[:k], ["min", "min"], REFERENCE) for k in range(1, trials + 1)]


def trials_to_reach(curve: list[float], target: float) -> int:
    return next((k + 1 for k, hv in enumerate(curve) if hv >= target), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samplers", default="nsga2,tpe,gp")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    random_final = statistics.median(hypervolume_curve("random", s, args.trials)[-1] for s in range(args.seeds))
    # what `auto` (the default) picks for a continuous space like ZDT1's
    cfg = config.validate({"name": "bench", "methods": ["lora"], "search": {"lr": {"low": 1e-5, "high": 1e-2}}})
    default = chosen_sampler(cfg, make_plan(cfg))
    for name in args.samplers.split(","):
        curves = [hypervolume_curve(name, seed, args.trials) for seed in range(args.seeds)]
        needed = statistics.median(trials_to_reach(c, random_final) for c in curves)
        goal = args.trials // 2
        record(f"search_efficiency_{name}", f"trials to reach random search's {args.trials}-trial hypervolume "
               "(lower is better)", needed, args.trials, f"<= {goal} trials" + (" (the default sampler)" if name == default else ""),
               needed <= goal, sampler=name, default_sampler=default, seeds=args.seeds, function="ZDT1, 6 dims",
               reference=REFERENCE, random_hypervolume=random_final,
               median_hypervolume_at_32=statistics.median(c[31] for c in curves) if args.trials >= 32 else None,
               median_hypervolume_at_end=statistics.median(c[-1] for c in curves))


if __name__ == "__main__":
    main()
