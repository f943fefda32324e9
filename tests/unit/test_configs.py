"""Every bundled config validates and plans (--dry-run) on this machine, without Ray, weights or a hub:
budgets of paper-scale models resolve from their bundled config JSONs."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import commands
from orchestrator.config import shipped_configs

CONFIGS = list(shipped_configs())


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_dry_runs_by_name(name, tmp_path, capsys):
    assert commands.main(["sweep", name, "--dry-run", "--set", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "objectives:" in out and not (tmp_path / "sweep_config.json").exists()


def test_paper_budgets_resolve_offline(tmp_path, capsys):
    argv = ["sweep", "paper-qwen2.5-7b-sft", "--dry-run", "--set", f"output_dir={tmp_path}", "--set", "methods=[{name: lora}, {name: oft}]",
            "--set", "search.budgets=[2.0e+7]"]
    assert commands.main(argv) == 0
    out = capsys.readouterr().out
    assert '"r": 8' in out and '"block_size": 32' in out  # the paper's OFT-b32 vs LoRA-r8 pairing at 20M


def test_cluster_examples_are_valid_yaml():
    import yaml

    clusters = Path(__file__).resolve().parents[2] / "clusters"
    for path in clusters.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and data, path


@pytest.mark.parametrize("name", ["paper-qwen2.5-7b-sft", "paper-llama-3.2-3b-sft", "paper-rl"])
def test_paper_configs_give_each_trial_eight_gpu_ranks(name, tmp_path, capsys):
    """A trial uses the 8 GPUs it asks for: 8 data-parallel ranks x 1 GPU (ZeRO-3 for full finetuning)."""
    assert commands.main(["sweep", name, "--dry-run", "--set", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "per trial: world size 8 (Ray Train workers, DeepSpeed ZeRO-2), 1 CPU / 1 GPU per worker" in out
    if name != "paper-rl":
        assert "ZeRO per method: full 3" in out


@pytest.mark.parametrize("name, recipe", [
    ("paper-qwen2.5-7b-sft", "SFT: 256 examples per step (2 per micro-batch x 8 worker(s) x 16 accumulation), max length "
                             "8192, over-long examples dropped; AdamW betas (0.9, 0.95), cosine schedule"),
    ("paper-llama-3.2-3b-sft", "SFT: 256 examples per step (2 per micro-batch x 8 worker(s) x 16 accumulation), max "
                               "length 8192, over-long examples dropped; AdamW betas (0.9, 0.95), cosine schedule"),
    ("paper-rl", "GRPO: 256 prompts per rollout x 8 samples at temperature 1, 64 prompts per policy update (4 mini-batch(es) "
                 "per rollout), token-mean loss; AdamW betas (0.9, 0.999), constant schedule"),
])
def test_paper_configs_dry_run_prints_the_papers_protocol(name, recipe, tmp_path, capsys):
    """The paper's recipe and evaluation (arXiv 2605.28819, Sec. 4) as the dry run states them: its data, global
    batch, length, optimiser, and the math targets at avg@16 scored by math-verify."""
    assert commands.main(["sweep", name, "--dry-run", "--set", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "train task openr1_math (hf SphereLab/PEFTArena-data), up to 50000 items; " + recipe in out
    for task, items in (("math500", 500), ("amc23", 40), ("aime24", 30)):
        assert f"{task} (the whole " in out and f"split (up to {items}), 16 samples at temperature 0.6, up to 8192 new " \
            "tokens, match math_verify, exact_match)" in out
    assert "nq_open (the whole validation split (up to 3610), greedy, up to 32 new tokens, match lm_eval_exact_match" in out
    assert "bbh (the whole test split of each of 27 subtasks (up to 6511), 3-shot from lm-eval's " in out
    if name != "paper-rl":
        assert '"dropout": 0.05, "lora_alpha": 8, "r": 4' in out and '"dropout": 0.05, "r": 256' in out
