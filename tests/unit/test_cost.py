"""The --dry-run cost plan: numbers a person can recompute by hand from the config (tokens = steps x sequences x
max length, FLOPs = 6 x parameters x tokens, generations = items x samples, hours = work / throughput), and
the paper grid's plan, which shows where the GPU-hours of the paper's protocol go."""
from __future__ import annotations

import pytest

from evals import suites
from orchestrator import config
from orchestrator.cli import commands
from orchestrator.sweep import cost
from orchestrator.sweep.plan import make_plan


def test_sft_tokens_and_flops_by_hand():
    cfg = config.load("quick", ["train.steps=30", "train.checkpoint_every=15", "train.batch_size=8",
                                "train.max_length=96", "train.grad_accum=2", "resources.workers_per_trial=2"])
    trial = cost.trial_cost(cfg, 30, "sft", params=1000)
    assert trial.train_tokens == 30 * 8 * 2 * 2 * 96
    assert trial.train_flops == 6 * 1000 * trial.train_tokens
    assert trial.checkpoints == 2 and trial.rollout_tokens == 0  # steps 15 and 30


def test_grpo_rollouts_count_every_sampled_token():
    cfg = config.load("quick-rl", ["train.steps=9", "train.checkpoint_every=4", "train.grpo.prompts_per_step=2",
                                   "train.grpo.minibatches=2", "train.grpo.group_size=4", "train.grpo.max_new_tokens=16",
                                   "resources.workers_per_trial=2"])
    trial = cost.trial_cost(cfg, 9, "grpo", params=10)
    rollouts = 5  # 9 updates, 2 per rollout: the last rollout's second half is never trained on
    assert trial.rollout_tokens == rollouts * 2 * 2 * 4 * 16 == trial.train_tokens
    assert trial.checkpoints == 3  # 4, 8 and the last step


def test_scoring_counts_generative_items_and_samples_only():
    cfg = config.load("quick", ["eval.target_suite=[math500, arithmetic]", "eval.max_items=100"])
    per = cost.scoring(cfg)
    arithmetic = min(suites.load_task("arithmetic").n_items, 100)
    assert per.generations == 100 * 16 + arithmetic  # math500 at 16 samples, capped at 100 items; the
    assert per.new_tokens == 100 * 16 * 8192 + arithmetic * suites.load_task("arithmetic").max_new_tokens
    # retention suite quick is scored by likelihood: no generation


def test_inline_scoring_shared_by_the_ranks_costs_one_workers_device_hours():
    overrides = ["resources.workers_per_trial=8", "resources.gpus_per_worker=1",
                 "resources.throughput.train_flops_per_s=1e14", "resources.throughput.generate_tokens_per_s=500"]
    inline = config.load("quick", overrides)
    pool = config.load("quick", overrides + ["eval.mode=pool", "eval.gpus_per_actor=1"])
    trial = cost.TrialCost(train_tokens=0, train_flops=3.6e17, rollout_tokens=0, checkpoints=2)
    per = cost.Scoring(generations=10, new_tokens=900_000)
    # 8 ranks each score an eighth at once: 8 GPUs for 1/8 of the time a single GPU would take
    assert cost.device_hours(inline, trial, per) == pytest.approx((1.0, 2 * 900_000 / 500 / 3600))
    assert cost.device_hours(pool, trial, per) == pytest.approx((1.0, 2 * 900_000 / 500 / 3600))
    assert cost.throughput(inline)[1] == "set in resources.throughput"
    assert cost.throughput(config.load("quick"))[1] == "measured on 2 CPU cores"


def test_the_paper_grid_prints_its_plan(tmp_path, capsys):
    assert commands.main(["sweep", "paper-qwen2.5-7b-sft", "--dry-run", "--set", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "cost plan (upper bounds; per worker 4e+14 training FLOP/s and 1,000 generated tokens/s, assumed):" in out
    assert "per sft trial: trains on 1.64e+09 tokens (780 steps x 256 sequences x 8192), 7.47e+19 FLOPs (6 x 7.62B" in out
    assert "scores 9 checkpoints x 19,782 generations" in out  # 500 x 16 + 40 x 16 + 30 x 16 + 541 + 6,511 + 3,610
    assert "sweep: 18 trials + the base model scored once" in out
    assert 500 * 16 + 40 * 16 + 30 * 16 + 541 + 6511 + 3610 == 19782


def test_a_faster_decoder_cuts_the_evaluation_hours():
    slow = config.load("paper-qwen2.5-7b-sft")
    fast = config.load("paper-qwen2.5-7b-sft", ["resources.throughput.generate_tokens_per_s=10000"])
    plan = make_plan(slow)
    trial = cost.trial_cost(slow, 780, "sft", cost.model_params(slow))
    assert cost.device_hours(slow, trial, cost.scoring(slow))[1] == \
        pytest.approx(10 * cost.device_hours(fast, trial, cost.scoring(fast))[1])
    assert cost.cost_lines(slow, plan)[0].endswith("assumed):")
