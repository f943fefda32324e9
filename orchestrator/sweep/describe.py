"""The plan as a person reads it before anything runs (`peft-arena sweep --dry-run`): the space, the
training recipe, where trials and their scoring run, and what it will cost."""
from __future__ import annotations

import json

from evals import suites
from orchestrator.config import SweepConfig
from orchestrator.sweep.cost import cost_lines
from orchestrator.sweep.placement import concurrent_trials
from orchestrator.sweep.plan import Plan, num_samples, sampler_name


def evaluation_line(cfg: SweepConfig) -> str:
    """Where the checkpoints are scored, and what the evaluation service takes from the cluster."""
    if cfg.eval.mode == "inline":
        return "checkpoints scored inline: in each trial's process, training waits"
    return (f"checkpoints scored by the sweep's evaluation service: {cfg.eval.pool_size} Ray Data actor(s) x "
            f"{cfg.eval.cpus_per_actor:g} CPU / {cfg.eval.gpus_per_actor:g} GPU, beside the trials")


def training_line(cfg: SweepConfig, plan: Plan) -> str:
    """The training data, the global batch it is drawn in and the optimiser, as the paper states its recipe."""
    t, workers = cfg.train, cfg.resources.workers_per_trial
    source = suites.load_task(t.task).source
    where = f" ({source['kind']} {source['path']})" if "path" in source else ""
    per_step = []
    regimes = plan.regimes or [t.regime]
    if "sft" in regimes:
        kept = "over-long examples dropped" if t.overlong == "drop" else "over-long prompts cut from the left"
        per_step.append(f"SFT: {t.batch_size * workers * t.grad_accum} examples per step ({t.batch_size} per "
                        f"micro-batch x {workers} worker(s) x {t.grad_accum} accumulation), max length "
                        f"{t.max_length}, {kept}")
    if "grpo" in regimes:
        g = t.grpo
        per_step.append(f"GRPO: {g.prompts_per_step * workers} prompts per rollout x {g.group_size} samples at "
                        f"temperature {g.temperature:g}, {g.prompts_per_step // g.minibatches * workers * t.grad_accum} "
                        f"prompts per policy update ({g.minibatches} mini-batch(es) per rollout), "
                        f"{g.loss_agg.replace('_', '-')} loss")
    return (f"train task {t.task}{where}, up to {t.train_items} items; {'; '.join(per_step)}; AdamW betas ({t.betas[0]:g}, {t.betas[1]:g}), {t.schedule} schedule")


def placement_line(cfg: SweepConfig, plan: Plan, concurrent: tuple[int, str]) -> str:
    """What one trial takes (world size, per-worker CPUs and GPUs) and how many trials run at once."""
    res = cfg.resources
    ranks = "one process" if res.workers_per_trial == 1 else \
        f"world size {res.workers_per_trial} (Ray Train workers, DeepSpeed ZeRO-{cfg.train.zero_stage})"
    zero = sorted(plan.zero_stages.items())
    overrides = "; ZeRO per method: " + ", ".join(f"{m} {z}" for m, z in zero) if zero else ""
    return (f"per trial: {ranks}, {res.cpus_per_worker:g} CPU / {res.gpus_per_worker:g} GPU per worker; "
            f"{concurrent[0]} trial(s) at once ({concurrent[1]}){overrides}")


def describe(cfg: SweepConfig, plan: Plan, cluster: dict[str, float] | None = None) -> list[str]:
    """The planned space and resources, as lines (what --dry-run prints); `cluster`: a connected cluster's
    totals, which bound how many trials run at once."""
    sampler = sampler_name(cfg, plan)
    picked = f" (auto: {'the whole space' if sampler == 'grid' else 'the space exceeds the trials'})" \
        if cfg.search.sampler == "auto" else ""
    lines = [f"sweep {cfg.name}: sampler {sampler}{picked}, {num_samples(cfg, plan)} trials, "
             f"Ray address {cfg.ray.address}", placement_line(cfg, plan, concurrent_trials(cfg, cluster)),
             "objectives: " + ", ".join(f"{o.name} ({o.mode})" for o in cfg.search.objectives),
             f"model {cfg.model.name}", training_line(cfg, plan), suites.suite_protocol("target", cfg.eval.target_suite),
             suites.suite_protocol("retention", cfg.eval.retention_suite), evaluation_line(cfg)]
    for method in plan.methods:
        for setting, label in zip(plan.settings[method], plan.budget_labels[method]):
            budget = f"budget {label:.3g} -> " if label else ""
            lines.append(f"  {method:9s} {budget}{json.dumps(setting, sort_keys=True)}")
        for key, choices in plan.knobs.get(method, {}).items():
            lines.append(f"  {method:9s} knob {key}: {choices}")
    lr = plan.lrs or (f"log-uniform [{plan.lr_range[0]:g}, {plan.lr_range[1]:g}]" if plan.lr_range else cfg.train.lr)
    lines.append(f"  lr {lr}; steps {plan.steps or cfg.train.steps}; seeds {plan.seeds or [cfg.train.seed]}; "
                 f"regimes {plan.regimes or [cfg.train.regime]}")
    if sampler == "grid":
        lines.append(f"  grid size {plan.grid_size}")
    return lines + cost_lines(cfg, plan)
