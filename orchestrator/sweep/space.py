"""The search space Optuna samples (define-by-run: a method's setting and knobs exist only when it is
chosen), how a sample becomes a trial's config, and the samplers by name."""
from __future__ import annotations

from typing import Any

from orchestrator.config import SweepConfig
from orchestrator.sweep.plan import Plan


class DefineByRun:
    """Optuna's define-by-run space: a method's setting and knobs are only suggested when it is chosen.
    A module-level class, not a closure: OptunaSearch saves itself (this included) with plain pickle."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __call__(self, ot: Any) -> None:
        plan = self.plan
        method = ot.suggest_categorical("method", plan.methods)
        if len(plan.settings[method]) > 1:
            ot.suggest_categorical(f"{method}.setting", list(range(len(plan.settings[method]))))
        for key, choices in plan.knobs.get(method, {}).items():
            ot.suggest_categorical(f"{method}.{key}", choices)
        if plan.lrs:
            ot.suggest_categorical("lr", plan.lrs)
        elif plan.lr_range:
            ot.suggest_float("lr", plan.lr_range[0], plan.lr_range[1], log=plan.lr_range[2])
        if plan.steps:
            ot.suggest_categorical("steps", plan.steps)
        if plan.seeds:
            ot.suggest_categorical("seed", plan.seeds)
        if plan.regimes:
            ot.suggest_categorical("regime", plan.regimes)


def decode(params: dict[str, Any], plan: Plan, cfg: SweepConfig) -> tuple[str, dict[str, Any], SweepConfig, float | None]:
    """Suggested params -> (method, setting, the trial's config, its budget label)."""
    method = params["method"]
    index = params.get(f"{method}.setting", 0)
    setting = {**plan.settings[method][index]}
    setting.update({k: params[f"{method}.{k}"] for k in plan.knobs.get(method, {})})
    train = cfg.train.model_copy(update={k: params[k] for k in ("lr", "steps", "seed", "regime") if k in params}
                                 | ({"zero_stage": plan.zero_stages[method]} if method in plan.zero_stages else {}))
    return method, setting, cfg.model_copy(update={"train": train}), plan.budget_labels[method][index]


def make_sampler(name: str, seed: int, samples: int) -> Any:
    """An Optuna sampler by name (`sampler_name` resolves `auto` first)."""
    import warnings

    import optuna

    # BruteForceSampler is marked experimental since Optuna 3.1; it is what exhaustive search is
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return {
        # NSGA-II's first generation is random: small populations leave generations to evolve (on ZDT1,
        # 64 trials: a population of 8 reached random search's final hypervolume in 41 trials, of 32 in 51).
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, samples // 8))),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        # exhaustive over the define-by-run space, conditional knobs included: the method x budget table
        "grid": lambda: optuna.samplers.BruteForceSampler(seed=seed),
    }[name]()
