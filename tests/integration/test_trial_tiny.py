"""One trial end to end on the tiny local model: DeepSpeed training, per-checkpoint scores, result JSON,
and checkpoints that rebuild the trained model from disk alone."""
from __future__ import annotations

import json

import torch

from orchestrator import config, trial
from tests.conftest import tiny_config


def test_trial_writes_a_complete_result_and_reloadable_checkpoints(tmp_path, tiny_model_dir, isolated_cache):
    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep"))
    trial_dir = cfg.sweep_dir() / "trials" / "lora-r2"
    result = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    assert result["status"] == "completed", result.get("traceback")
    on_disk = json.loads((trial_dir / "result.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["config_hash"] == result["config_hash"]
    assert [c["step"] for c in on_disk["checkpoints"]] == [2, 4]
    for checkpoint in on_disk["checkpoints"]:
        for kind in ("target", "retention"):
            assert 0.0 <= checkpoint[kind]["score"] <= 1.0
        assert checkpoint["gain"] == checkpoint["target"]["score"] - on_disk["base"]["target"]["score"]
    assert set(on_disk["base"]["retention"]["tasks"]) == {"text_local", "mc_local"}
    # LoRA r=2 on q,k,v,o (32->32, 32->16 twice, 32->32) and gate, up, down (32<->64), 2 layers: r*(in+out)
    assert on_disk["params"]["trainable"] == 2 * 2 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 3)
    assert on_disk["params"]["trainable"] > 0 and on_disk["timings"]["train_s"] > 0
    assert {"torch", "peft", "deepspeed"} <= set(on_disk["versions"])
    assert (isolated_cache / "base_scores").is_dir()  # base scores cached for the next trial

    model, tokenizer, meta = trial.load_trained(trial_dir / "checkpoints" / "step_000004")
    assert meta["method"] == "lora" and meta["step"] == 4
    ids = torch.tensor([tokenizer("Question: What is 2 + 3?\nAnswer:")["input_ids"]])
    again, _, _ = trial.load_trained(trial_dir / "checkpoints" / "step_000004")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, again.eval()(input_ids=ids).logits, atol=1e-6, rtol=0)
