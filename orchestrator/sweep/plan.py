"""What a sweep may try, from its config and the model's config alone (no weights, no Ray): each method's
candidate settings (parameter budgets resolved to a knob value by `methods.budget`), its knobs, and the
sampler and trial count that cover that space."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from methods import budget as budgets, registry
from orchestrator.config import ConfigError, SweepConfig


@dataclass
class Plan:
    """What a sweep may try: per method, its candidate settings (labelled by budget where one was set)."""
    methods: list[str]
    settings: dict[str, list[dict[str, Any]]]
    budget_labels: dict[str, list[float | None]]
    knobs: dict[str, dict[str, list[Any]]]
    lrs: list[float] | None
    lr_range: tuple[float, float, bool] | None
    steps: list[int] | None
    seeds: list[int] | None
    regimes: list[str] | None = None
    zero_stages: dict[str, int] = field(default_factory=dict)  # per-method overrides of train.zero_stage
    grid_size: int = 0
    notes: list[str] = field(default_factory=list)


def make_plan(cfg: SweepConfig) -> Plan:
    """Resolve budgets to settings with `methods.budget.solve` (config only: no weights, no Ray)."""
    search = cfg.search
    settings: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, list[float | None]] = {}
    model_config = None
    for entry in cfg.methods:
        spec = registry.get(entry.name)
        if search.budgets and spec.budget_knob:
            if model_config is None:
                try:
                    model_config = budgets.load_model_config(cfg.model.name)
                except budgets.BudgetError as err:
                    raise ConfigError(f"model.name: {err}") from None
            chosen, chosen_labels = [], []
            for value in search.budgets:
                try:
                    solution = budgets.solve(model_config, spec.name, value, entry.settings[0],
                                             cfg.model.target_modules, search.budget_tolerance)
                except budgets.BudgetError as err:
                    raise ConfigError(f"search.budgets: {err}") from None
                if solution.setting not in chosen:
                    chosen.append(solution.setting)
                    chosen_labels.append(value)
            settings[spec.name], labels[spec.name] = chosen, chosen_labels
        else:
            settings[spec.name] = [spec.resolve_setting(s) for s in entry.settings]
            labels[spec.name] = [None] * len(entry.settings)
    knobs = {registry.get(m).name: k for m, k in search.knobs.items()}
    lrs = search.lr if isinstance(search.lr, list) else None
    lr_range = (search.lr.low, search.lr.high, search.lr.log) if search.lr is not None and lrs is None else None
    plan = Plan(list(settings), settings, labels, knobs, lrs, lr_range, search.steps, search.seeds, search.regimes,
                {registry.get(e.name).name: e.zero_stage for e in cfg.methods if e.zero_stage is not None})
    per_method = [len(settings[m]) * math.prod(len(c) for c in knobs.get(m, {}).values()) for m in settings]
    if lr_range is None:  # a continuous lr makes the space infinite: grid_size stays 0
        plan.grid_size = sum(per_method) * math.prod(len(v or [0]) for v in (lrs, search.steps, search.seeds,
                                                                              search.regimes))
    return plan


def sampler_name(cfg: SweepConfig, plan: Plan) -> str:
    """The sampler the sweep uses. `auto`: every configuration once (grid) when the trial budget covers
    the whole space, else TPE, the most sample-efficient one measured (bench/search_efficiency.py)."""
    chosen = cfg.search.sampler
    if chosen != "auto":
        return chosen
    covered = plan.grid_size and (cfg.search.num_samples or plan.grid_size) >= plan.grid_size
    return "grid" if covered else "tpe"


def num_samples(cfg: SweepConfig, plan: Plan) -> int:
    if sampler_name(cfg, plan) == "grid":  # more trials than configurations would only repeat some
        return min(cfg.search.num_samples or plan.grid_size, plan.grid_size)
    return cfg.search.num_samples or max(4, len(plan.methods) * 2)
