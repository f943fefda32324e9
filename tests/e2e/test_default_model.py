"""End to end on the packaged SmolLM2-135M through the installed CLI: a short LoRA sweep raises the target
score relative to the base model, every number lands in the result JSON, and the exported front member,
reloaded with plain peft, scores what the sweep recorded."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lora_sweep_on_default_model_gains_and_its_exported_front_scores_the_same(tmp_path):
    from peft import PeftModel

    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import models, scoring

    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", "quick", "--set", "methods=[{name: lora, settings: [{r: 8}]}]",
         "--set", "search.budgets=null", "--set", "train.steps=16", "--set", "train.checkpoint_every=16",
         "--set", "eval.max_items=12", "--set", "eval.retention_suite=[brown_nll, wordnet_nouns]",
         "--set", "tracking.enabled=false", "--set", f"output_dir={out}/{{name}}"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "gain" in proc.stdout and "forgetting" in proc.stdout
    where = SweepDir(out / "quick")
    (result,) = where.collect()
    assert result["status"] == "completed"
    assert result["params"]["trainable"] == 2_442_240  # LoRA r8 on all 7 projections of SmolLM2-135M
    assert result["params"]["total"] == 134_515_008
    assert [c["step"] for c in result["checkpoints"]] == [16]
    base_target = result["base"]["target"]["score"]
    final_target = result["checkpoints"][-1]["target"]["score"]
    # SFT on the task's train split must raise the held-out answer likelihood well above the base model's.
    assert result["final"]["gain"] == pytest.approx(final_target - base_target)
    assert result["final"]["gain"] > 0.05, result["final"]
    assert result["train_log"][-1]["loss"] < result["train_log"][0]["loss"]

    exported = subprocess.run([sys.executable, "-m", "orchestrator.cli", "export", str(where.root), "--front",
                               "--to", str(tmp_path / "front")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert exported.returncode == 0, exported.stderr[-3000:]
    (folder,) = (tmp_path / "front").iterdir()
    cfg = where.load_config()
    base, tokenizer = models.load(cfg.model)
    reloaded = PeftModel.from_pretrained(base, folder).eval()
    scores = scoring.evaluate(reloaded, tokenizer, cfg.eval)
    for kind in ("target", "retention"):
        assert scores[kind]["score"] == pytest.approx(result["checkpoints"][-1][kind]["score"], abs=1e-6), kind


@pytest.mark.slow
def test_exact_resume_of_a_killed_run_on_the_default_model(tmp_path):
    """`peft-arena run`, SIGKILLed after its step-2 checkpoint and run again, ends with the adapter an
    uninterrupted run ends with: the same sha256."""
    import os
    import signal

    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import checkpoints
    from tests.helpers import wait_until

    def run(out: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run", "quick", "--method", "lora", "--setting", "r=2",
             "--set", "train.steps=4", "--set", "train.checkpoint_every=2", "--set", "eval.max_items=2",
             "--set", "eval.retention_suite=[brown_nll]", "--set", f"output_dir={out}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run(whole).wait(timeout=900) == 0
    proc = run(killed)
    marker = SweepDir(killed).trial("lora-r2").checkpoint(2) / checkpoints.META_FILE  # written last
    wait_until(marker.is_file, "the first checkpoint's meta file (written last)", alive=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run(killed).wait(timeout=900) == 0
    results = [SweepDir(d).trial("lora-r2").read_result() for d in (whole, killed)]
    assert results[1]["resumed"] == "exact" and results[1]["resumed_from_step"] >= 2
    shas = [checkpoints.read_meta(Path(r["checkpoints"][-1]["path"]))["sha256"] for r in results]
    assert shas[0] == shas[1]
