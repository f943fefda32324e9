"""One trial end to end on the tiny local model: DeepSpeed training, per-checkpoint scores, result JSON,
and checkpoints that rebuild the trained model from disk alone."""
from __future__ import annotations

import json

import pytest
import yaml
import torch

from evals import uncertainty
from orchestrator import config
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import checkpoints, trial
from tests.helpers import tiny_config


def test_trial_writes_a_complete_result_and_reloadable_checkpoints(tmp_path, tiny_model_dir, isolated_cache):
    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep"))
    trial_dir = SweepDir.of(cfg).trial("lora-r2")
    result = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    assert result["status"] == "completed", result.get("traceback")
    on_disk = json.loads((trial_dir.root / "result.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["config_hash"] == result["config_hash"]
    assert [c["step"] for c in on_disk["checkpoints"]] == [2, 4]
    for checkpoint in on_disk["checkpoints"]:
        for kind in ("target", "retention"):
            assert 0.0 <= checkpoint[kind]["score"] <= 1.0
        assert checkpoint["gain"] == checkpoint["target"]["score"] - on_disk["base"]["target"]["score"]
        # each estimate with its paired 95% interval, computed from the per-item scores kept beside it
        for name in ("gain", "forgetting"):  # (to rounding: a tiny model's change can be one float's width)
            low, high = checkpoint[f"{name}_ci"]
            assert low - 1e-12 <= checkpoint[name] <= high + 1e-12
        for kind in ("target", "retention"):
            for name, task in checkpoint[kind]["tasks"].items():
                assert task["items"]["id"] == on_disk["base"][kind]["tasks"][name]["items"]["id"]  # paired by id
                assert len(task["items"]["id"]) == task["n"] and float(uncertainty.task_metric(task)) == \
                    pytest.approx(task["score"], rel=1e-12)
    assert on_disk["final"]["gain_ci"] == on_disk["checkpoints"][-1]["gain_ci"]
    assert set(on_disk["base"]["retention"]["tasks"]) == {"text_local", "mc_local"}
    # LoRA r=2 on q,k,v,o (32->32, 32->16 twice, 32->32) and gate, up, down (32<->64), 2 layers: r*(in+out)
    assert on_disk["params"]["trainable"] == 2 * 2 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 3)
    assert on_disk["params"]["trainable"] > 0 and on_disk["timings"]["train_s"] > 0
    assert {"torch", "peft", "deepspeed"} <= set(on_disk["versions"])
    assert (isolated_cache / "base_scores").is_dir()  # base scores cached for the next trial
    _check_every_reply_is_kept(trial_dir, on_disk)

    model, tokenizer, meta = checkpoints.load_trained(trial_dir.root / "checkpoints" / "step_000004")
    assert meta["method"] == "lora" and meta["step"] == 4
    ids = torch.tensor([tokenizer("Question: What is 2 + 3?\nAnswer:")["input_ids"]])
    again, _, _ = checkpoints.load_trained(trial_dir.root / "checkpoints" / "step_000004")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, again.eval()(input_ids=ids).logits, atol=1e-6, rtol=0)


def _check_every_reply_is_kept(trial_dir, result: dict) -> None:
    """Each scored point's replies lie in replies/<point>.jsonl.gz, one row per item of each generative task
    in the order of its ids (the result shows the first few as examples); the result JSON holds none."""
    assert "replies" not in json.dumps(result)
    points = {"base": result["base"]} | {f"step_{c['step']:06d}": c for c in result["checkpoints"]}
    assert sorted(p.name for p in trial_dir.replies_root.iterdir()) == sorted(f"{label}.jsonl.gz" for label in points)
    for label, point in points.items():
        rows = trial_dir.read_replies(label)
        generative = {(kind, name): task for kind in ("target", "retention")
                      for name, task in point[kind]["tasks"].items() if "examples" in task}
        assert list(generative) == [("target", "arithmetic")]  # the local retention tasks are likelihoods
        for (kind, name), task in generative.items():
            mine = [r for r in rows if (r["kind"], r["task"]) == (kind, name)]
            assert [r["id"] for r in mine] == task["items"]["id"] and len(mine) == task["n"]
            assert [r["reply"] for r in mine[:3]] == task["examples"]


def test_rerun_returns_the_completed_result_and_resume_continues_from_the_last_good_checkpoint(
        tmp_path, tiny_model_dir, isolated_cache):
    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep", steps=6))
    trial_dir = SweepDir.of(cfg).trial("t")
    full = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    assert full["status"] == "completed" and [c["step"] for c in full["checkpoints"]] == [2, 4, 6]
    assert trial.run(cfg, "lora", {"r": 2}, trial_dir) == full  # completed: returned, not retrained

    # Simulate a crash after step 4 whose last checkpoint was half-written: the result is partial,
    # the step-6 weights are truncated. The retry must skip them and resume from step 4.
    partial = dict(full, status="running", checkpoints=full["checkpoints"][:2],
                   train_log=[r for r in full["train_log"] if r["step"] <= 4])
    (trial_dir.root / "result.json").write_text(json.dumps(partial))
    weights = trial_dir.root / "checkpoints" / "step_000006" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    resumed = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == 4 and resumed["attempts"] == 2
    assert [c["step"] for c in resumed["checkpoints"]] == [2, 4, 6]
    assert [r["step"] for r in resumed["train_log"]] == [1, 2, 3, 4, 5, 6]
    # the same data order and LR schedule: the resumed steps see the same learning rates as the full run
    assert [r["lr"] for r in resumed["train_log"]] == [r["lr"] for r in full["train_log"]]


def test_a_single_run_is_a_sweep_dir_that_every_command_reads(tmp_path, tiny_model_dir, isolated_cache, capsys):
    """`peft-arena run` writes the summary it names, and its output dir is a sweep dir of its runs: a second
    run adds its trial there, and analyze, report and export read it as they read a sweep's."""
    from orchestrator.cli import commands

    path = tmp_path / "single.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, tmp_path / "single")))
    for setting in ("r=2", "r=3"):
        assert commands.main(["run", str(path), "--method", "lora", "--setting", setting]) == 0
    where = SweepDir(tmp_path / "single")
    summary = json.loads(where.summary.read_text())
    assert sorted(row["trial"] for row in summary["trials"]) == ["lora-r2", "lora-r3"] and summary["front"]
    assert f"summary: {where.summary}" in capsys.readouterr().out
    for argv in (["analyze", str(where.root)], ["report", str(where.root)],
                 ["export", str(where.root), "lora-r2", "--to", str(tmp_path / "adapter")]):
        assert commands.main(argv) == 0, argv
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and where.report.is_file()
