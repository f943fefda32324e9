"""Security defaults, one test each: loopback servers, safetensors-only weights, safe YAML, sandboxed
templates, and writes that cannot leave the sweep dir."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from evals import suites
from orchestrator import config, files
from orchestrator.cli import commands
from orchestrator.config import ConfigError
from orchestrator.storage import sweep_dir
from orchestrator.tracking import ui
from orchestrator.trials import checkpoints, models

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("orchestrator", "methods", "evals", "analysis", "bench") for p in (ROOT / d).rglob("*.py")]


def test_mlflow_ui_binds_loopback_unless_told_otherwise(tmp_path):
    args = commands.build_parser().parse_args(["ui", str(tmp_path)])
    assert args.host == "127.0.0.1"
    where = sweep_dir.SweepDir.of(config.validate({"name": "s", "output_dir": str(tmp_path), "methods": [{"name": "lora"}]}))
    command, _ = ui.mlflow_ui(where, args.host, 5000, password=None, insecure=False)
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--allowed-hosts" not in command
    exposed, _ = ui.mlflow_ui(where, "0.0.0.0", 5000, password=None, insecure=True)  # explicit: then the allowed Host headers are set
    assert "--allowed-hosts" in exposed


def test_no_pickle_loading_and_no_unsafe_yaml_anywhere_in_our_code():
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"torch\.load\(|pickle\.loads?\(", text), path
        assert not re.search(r"yaml\.load\(|yaml\.unsafe_load|yaml\.full_load", text), path


def test_pickle_weights_are_refused_unless_trusted(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="trust_pickle"):
        models.check_local_dir(tmp_path, trust_pickle=False)
    models.check_local_dir(tmp_path, trust_pickle=True)  # the user's explicit choice


def test_checkpoints_load_through_safetensors_only(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "adapter.pt")  # a pickle where the adapter should be
    (tmp_path / checkpoints.META_FILE).write_text("{}")
    with pytest.raises(checkpoints.CheckpointError, match="missing adapter.safetensors"):
        checkpoints.load(tmp_path)


def test_yaml_tags_cannot_construct_python_objects(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['touch pwned']\nmethods: [{name: lora}]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(evil)
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(evil.read_text())
    assert not Path("pwned").exists()


def test_task_templates_are_sandboxed(tmp_path):
    task = suites.Task(name="evil", source={"kind": "jsonl", "path": "x"}, scorer="text_nll", metric="token_prob")
    with pytest.raises(suites.TaskError, match="failed"):
        task.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
    with pytest.raises(suites.TaskError):
        task.render("{{ cycler.__init__.__globals__.os.system('touch pwned') }}", {})
    assert task.render("Q: {{ question | upper }}", {"question": "fine"}) == "Q: FINE"


def test_paths_from_names_cannot_escape_the_sweep_dir(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        files.safe_join(tmp_path, "trials", "../../etc/passwd")
    assert files.safe_join(tmp_path, "trials", "abc").parent == (tmp_path / "trials").resolve()
    assert "/" not in sweep_dir.trial_name("lora", {"r": "../../x"})
    with pytest.raises(ValueError, match="escapes"):
        sweep_dir.SweepDir(tmp_path).trial("../../etc")
    with pytest.raises(ConfigError, match="name"):
        config.validate({"name": "../escape", "methods": [{"name": "lora"}]})


def test_failed_atomic_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text('{"old": true}')

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError):
        files.atomic_write_json(target, {"new": True})
    assert target.read_text() == '{"old": true}' and list(tmp_path.iterdir()) == [target]
