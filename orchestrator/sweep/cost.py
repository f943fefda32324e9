"""What a sweep will cost, estimated before a cluster is paid for (`--dry-run`): training tokens and FLOPs,
evaluation generations and tokens, and the device-hours they take at a stated throughput.

Every figure is an upper bound a person can recompute by hand: training sequences count at `max_length`,
replies at their task's `max_new_tokens`, a task at its `n_items` (capped by `eval.max_items`); training FLOPs
are the standard 6 x parameters x tokens (forward and backward through the whole model, which PEFT still
runs); likelihood-scored tasks, whose cost is a forward pass per item, and rewinding are left out. The
throughputs are per worker and overridable (`resources.throughput`); the defaults say where they come from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from evals import suites
from methods import budget
from orchestrator.config import SweepConfig
from orchestrator.sweep.plan import Plan, num_samples

# Per-worker defaults. CPU: measured by this project's benchmarks on 2 cores (bench/results/
# training_throughput_lora.json: 1.41e11 FLOP/s achieved; generative_eval_vs_lm_eval.json: 2.35 replies/s x 16
# tokens on an AVX2 EPYC). GPU: assumed, not measured: 40% of an H100's 989 dense bf16 TFLOP/s, and 1,000
# new tokens/s for the project's batched decoder; `make gpu-check` prints figures to put in their place.
CPU_THROUGHPUT = {"train_flops_per_s": 1.41e11, "generate_tokens_per_s": 37.6}
GPU_THROUGHPUT = {"train_flops_per_s": 4.0e14, "generate_tokens_per_s": 1.0e3}


@dataclass(frozen=True)
class Scoring:
    """One scoring of a model on both suites: generated replies and their new tokens (upper bound)."""
    generations: int
    new_tokens: int


@dataclass(frozen=True)
class TrialCost:
    train_tokens: int
    train_flops: float
    rollout_tokens: int  # GRPO's sampled completion tokens (generated, then trained on)
    checkpoints: int  # scored, each on both suites


def scoring(cfg: SweepConfig) -> Scoring:
    generations = tokens = 0
    for kind in suites.SUITE_KINDS:
        for name in suites.suite_task_names(kind, cfg.eval.suite_refs()[kind]):
            task = suites.load_task(name)
            if not suites.SCORERS[task.scorer].generates:
                continue
            items = min(task.n_items, cfg.eval.max_items) if cfg.eval.max_items else task.n_items
            generations += items * task.samples
            tokens += items * task.samples * task.max_new_tokens
    return Scoring(generations, tokens)


def trial_cost(cfg: SweepConfig, steps: int, regime: str, params: int) -> TrialCost:
    t, workers = cfg.train, cfg.resources.workers_per_trial
    checkpoints = len(set(range(t.checkpoint_every, steps + 1, t.checkpoint_every)) | {steps})
    if regime == "grpo":
        g = t.grpo
        rollouts = math.ceil(steps * t.grad_accum / g.minibatches)
        rollout_tokens = rollouts * g.prompts_per_step * workers * g.group_size * (g.max_new_tokens or 0)
        return TrialCost(rollout_tokens, 6.0 * params * rollout_tokens, rollout_tokens, checkpoints)
    tokens = steps * t.batch_size * t.grad_accum * workers * t.max_length
    return TrialCost(tokens, 6.0 * params * tokens, 0, checkpoints)


def throughput(cfg: SweepConfig) -> tuple[dict[str, float], str]:
    """Per-worker throughput, and where it comes from."""
    defaults, origin = (GPU_THROUGHPUT, "assumed") if cfg.resources.gpus_per_worker > 0 else (CPU_THROUGHPUT, "measured on 2 CPU cores")
    given = cfg.resources.throughput.model_dump(exclude_none=True)
    return {**defaults, **given}, "set in resources.throughput" if given else origin


def device_hours(cfg: SweepConfig, cost: TrialCost, per_scoring: Scoring) -> tuple[float, float]:
    """(training, evaluation) device-hours of one trial: GPU-hours on GPUs, worker-hours on CPUs. Inline
    scoring is shared by the trial's ranks, each scoring its share of the chunks at once, so it costs
    the work's hours on one worker's devices (an upper bound: the shares are not always even), as the
    pool costs them on each actor's."""
    rate, _ = throughput(cfg)
    devices = cfg.resources.workers_per_trial * (cfg.resources.gpus_per_worker or 1)
    train = cost.train_flops / rate["train_flops_per_s"] / 3600
    generate = (cost.rollout_tokens / cfg.resources.workers_per_trial) / rate["generate_tokens_per_s"] / 3600 * devices
    holds = (cfg.resources.gpus_per_worker or 1) if cfg.eval.mode == "inline" else (cfg.eval.gpus_per_actor or 1.0)
    evaluate = cost.checkpoints * per_scoring.new_tokens / rate["generate_tokens_per_s"] / 3600 * holds
    return train + generate, evaluate


def spent(hours: float, unit: str) -> str:
    """Hours as a person reads them: whole hours from 10 up, minutes under one."""
    if hours >= 10:
        return f"{hours:,.0f} {unit}-hours"
    return f"{hours:.1f} {unit}-hours" if hours >= 1 else f"{hours * 60:.1f} {unit}-minutes"


def model_params(cfg: SweepConfig) -> int | None:
    """The base model's parameter count, from its config on the meta device (no weights); None where the
    config cannot be read here (a hub id without network)."""
    try:
        model = budget.meta_model(budget.load_model_config(cfg.model.name))
    except budget.BudgetError:
        return None
    return sum(p.numel() for p in model.parameters())


def cost_lines(cfg: SweepConfig, plan: Plan) -> list[str]:
    params = model_params(cfg)
    if params is None:
        return [f"cost plan: no config of {cfg.model.name} could be read here, so no FLOPs or hours "
                "(give a model dir or a bundled name to see them)"]
    rate, origin = throughput(cfg)
    unit = "GPU" if cfg.resources.gpus_per_worker > 0 else "worker"
    per_scoring, trials = scoring(cfg), num_samples(cfg, plan)
    steps, regimes = max(plan.steps or [cfg.train.steps]), plan.regimes or [cfg.train.regime]
    costs = {regime: trial_cost(cfg, steps, regime, params) for regime in regimes}
    lines = [f"cost plan (upper bounds; per worker {rate['train_flops_per_s']:.3g} training FLOP/s and "
             f"{rate['generate_tokens_per_s']:,.0f} generated tokens/s, {origin}):"]
    for regime, cost in costs.items():
        train_h, eval_h = device_hours(cfg, cost, per_scoring)
        what = (f"{cost.rollout_tokens:.3g} sampled completion tokens" if regime == "grpo"
                else f"{cost.train_tokens:.3g} tokens ({steps} steps x {cost.train_tokens // steps // cfg.train.max_length} "
                     f"sequences x {cfg.train.max_length})")
        lines.append(f"  per {regime} trial: trains on {what}, {cost.train_flops:.3g} FLOPs (6 x {params / 1e9:.3g}B "
                     f"params x tokens); scores {cost.checkpoints} checkpoints x {per_scoring.generations:,} "
                     f"generations (up to {per_scoring.new_tokens:.3g} new tokens each time); "
                     f"{spent(train_h, unit)} training + {spent(eval_h, unit)} evaluation")
    worst = max(costs.values(), key=lambda c: sum(device_hours(cfg, c, per_scoring)))
    total = trials * sum(device_hours(cfg, worst, per_scoring)) + \
        per_scoring.new_tokens / rate["generate_tokens_per_s"] / 3600  # the base model, scored once
    lines.append(f"  sweep: {trials} trials + the base model scored once: "
                 f"{trials * worst.checkpoints * per_scoring.generations + per_scoring.generations:,} generations, "
                 f"up to {spent(total, unit)}")
    return lines
