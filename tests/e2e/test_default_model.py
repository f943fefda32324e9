"""End to end on the packaged SmolLM2-135M through the installed CLI: a short LoRA trial changes the
target score relative to the base model, and every number lands in the result JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lora_trial_on_default_model_gains_on_target(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "quick", "--method", "lora",
         "--setting", "r=8", "--set", "train.steps=16", "--set", "train.checkpoint_every=8",
         "--set", "eval.max_items=12", "--set", "eval.retention_suite=[wiki_nll, physics]",
         "--set", f"output_dir={out}/{{name}}"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gain" in proc.stdout and "forgetting" in proc.stdout
    result = json.loads((out / "quick" / "trials" / "lora-r8" / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["params"]["trainable"] == 2_442_240  # LoRA r8 on all 7 projections of SmolLM2-135M
    assert result["params"]["total"] == 134_515_008
    assert [c["step"] for c in result["checkpoints"]] == [8, 16]
    base_target = result["base"]["target"]["score"]
    final_target = result["checkpoints"][-1]["target"]["score"]
    # SFT on the task's train split must raise the held-out answer likelihood well above the base model's.
    assert result["final"]["gain"] == pytest.approx(final_target - base_target)
    assert result["final"]["gain"] > 0.05, result["final"]
    assert result["train_log"][-1]["loss"] < result["train_log"][0]["loss"]
