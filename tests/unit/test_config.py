"""Configs: the shipped ones load by name, overrides and shorthands parse, `init` writes a config that
loads, paths are pinned for workers. (Every bad input and its one-line error: tests/bad_inputs.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import config
from orchestrator.cli import commands

QUICK = config.shipped_configs()["quick"]


def quick() -> dict:
    return yaml.safe_load(QUICK.read_text())


def test_quick_config_loads_by_name_and_covers_its_whole_space():
    from orchestrator.sweep.plan import make_plan, sampler_name

    cfg = config.load("quick")
    assert cfg == config.load(QUICK) == config.load("quick.yaml")
    plan = make_plan(cfg)
    assert plan.grid_size == cfg.search.num_samples == 6  # 3 methods x 2 budgets, each configuration once
    assert sampler_name(cfg, plan) == "grid"
    assert sampler_name(config.load("quick", ["search.num_samples=4"]), plan) == "tpe"


def test_methods_may_be_bare_names():
    assert [m.name for m in config.load(QUICK, ["methods=[lora, bone]"]).methods] == ["lora", "miss"]


def test_init_writes_a_config_that_loads_under_its_new_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert commands.main(["init", "mine", "--from", "quick-rl"]) == 0
    written = tmp_path / "mine.yaml"
    assert written.read_text().startswith("#")  # the shipped comments are kept for the reader
    cfg = config.load(written)
    assert cfg.name == "mine" and cfg.model_dump(exclude={"name", "output_dir"}) == \
        config.load("quick-rl").model_dump(exclude={"name", "output_dir"})
    assert commands.main(["configs"]) == 0
    assert {"quick", "quick-rl", "paper-qwen2.5-7b-sft"} <= {line.split()[0] for line in capsys.readouterr().out.splitlines()}


def test_overrides_parse_yaml_values():
    cfg = config.load(QUICK, ["train.steps=7", "train.lr=2e-4", "methods=[{name: dora}]"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(2e-4)
    assert cfg.methods[0].name == "dora"


def test_method_aliases_resolve_to_canonical_names():
    data = quick() | {"methods": [{"name": "Full-FT"}, {"name": "bone", "settings": [{"r": 8}]}]}
    assert [m.name for m in config.validate(data).methods] == ["full", "miss"]


def test_cli_missing_model_path_exits_2_in_a_real_process(tmp_path):
    """The installed console script, not just main(): no traceback, exit 2, the field named."""
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(QUICK), "--method", "lora",
                           "--set", f"model.name={tmp_path}/missing-model", "--set", f"output_dir={tmp_path}/out"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines and "model.name" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was written for a refused run


def test_output_dir_is_absolute_once_loaded(tmp_path, monkeypatch):
    """Workers run in Ray's working dir: a relative output_dir must be pinned to the user's cwd."""
    monkeypatch.chdir(tmp_path)
    cfg = config.load(QUICK)
    assert cfg.output_dir == str(tmp_path / "runs" / "quick") and Path(cfg.output_dir).is_absolute()
    assert config.validate(cfg.model_dump()).output_dir == cfg.output_dir  # stable when re-validated


def test_grpo_trials_train_at_the_scaled_learning_rate_and_sft_trials_do_not():
    from orchestrator.trials import trainer
    import torch

    sft = config.TrainConfig(lr=2e-4, grpo={"lr_scale": 0.05})
    grpo = sft.model_copy(update={"regime": "grpo"})
    assert trainer.deepspeed_config(sft, torch.float32)["optimizer"]["params"]["lr"] == 2e-4
    assert trainer.deepspeed_config(grpo, torch.float32)["optimizer"]["params"]["lr"] == pytest.approx(1e-5)


def test_grpo_samples_as_long_as_the_training_task_is_scored_unless_told():
    from evals import suites

    assert config.TrainConfig(task="arithmetic").grpo.max_new_tokens == suites.load_task("arithmetic").max_new_tokens == 16
    assert config.TrainConfig(task="gsm_symbolic").grpo.max_new_tokens == suites.load_task("gsm_symbolic").max_new_tokens
    assert config.TrainConfig(grpo={"max_new_tokens": 5}).grpo.max_new_tokens == 5
