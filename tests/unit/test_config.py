"""Bad config input ends in one line that names the field, and exit code 2 from the CLI."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import cli, config
from orchestrator.config import ConfigError

QUICK = Path(__file__).resolve().parents[2] / "configs" / "quick.yaml"


def quick() -> dict:
    return yaml.safe_load(QUICK.read_text())


def test_quick_config_is_valid():
    cfg = config.load(QUICK)
    assert cfg.name == "quick" and [m.name for m in cfg.methods] == ["lora", "oft", "ia3"]
    assert cfg.search.sampler == "nsga2" and len(cfg.search.budgets) >= 2


def test_overrides_parse_yaml_values():
    cfg = config.load(QUICK, ["train.steps=7", "train.lr=2e-4", "methods=[{name: dora}]"])
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(2e-4)
    assert cfg.methods[0].name == "dora"


def test_method_aliases_resolve_to_canonical_names():
    data = quick() | {"methods": [{"name": "Full-FT"}, {"name": "bone", "settings": [{"r": 8}]}]}
    assert [m.name for m in config.validate(data).methods] == ["full", "miss"]


BAD = [
    ({"train": {"steps": -1}}, "train.steps"),
    ({"train": {"steps": 0}}, "train.steps"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"train": {"zero_stage": 5}}, "train.zero_stage"),
    ({"train": {"task": "no_such_task"}}, "train.task"),
    ({"train": {"stpes": 3}}, "train.stpes"),
    ({"bogus_section": {}}, "bogus_section"),
    ({"model": {"dtype": "float8"}}, "model.dtype"),
    ({"eval": {"retention_suite": "nope"}}, "retention_suite"),
    ({"eval": {"batch_size": 0}}, "eval.batch_size"),
    ({"methods": []}, "methods"),
    ({"methods": [{"name": "lorax"}]}, "unknown method 'lorax'"),
    ({"methods": [{"name": "lora", "settings": [{"rank": 8}]}]}, "unknown key 'rank'"),
    ({"name": "has spaces"}, "name"),
]


@pytest.mark.parametrize("patch,field", BAD, ids=[f for _, f in BAD])
def test_bad_values_name_the_field(patch, field):
    data = copy.deepcopy(quick())
    for key, value in patch.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    with pytest.raises(ConfigError) as err:
        config.validate(data)
    message = str(err.value)
    assert field in message and "\n" not in message


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        config.load(bad)


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(quick() | {"train": {"steps": -3}}))
    assert cli.main(["run", str(bad), "--method", "lora"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: train.steps")


def test_cli_unknown_method_exits_2(capsys):
    assert cli.main(["run", str(QUICK), "--method", "nonexistent"]) == 2
    assert "unknown method 'nonexistent'" in capsys.readouterr().err


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
    assert cfg.output_dir == str(tmp_path / "runs" / "quick") and cfg.sweep_dir().is_absolute()
    assert config.validate(cfg.model_dump()).output_dir == cfg.output_dir  # stable when re-validated


def test_grpo_trials_train_at_the_scaled_learning_rate_and_sft_trials_do_not():
    from orchestrator import trainer
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
