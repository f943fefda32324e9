"""The DeepSpeed engine really trains on the CPU accelerator, and its checkpoints reload exactly."""
from __future__ import annotations


import pytest
import torch

from methods import registry
from orchestrator.config import TrainConfig
from orchestrator.storage.sweep_dir import TrialDir
from orchestrator.trials import checkpoints, regimes, trainer
from tests.helpers import build_tiny_model


def _pairs(tokenizer, n=16):
    qa = [(f"Question: What is {a} + {b}?\nAnswer:", f" {a + b}</s>") for a in range(4) for b in range(4)]
    return [(tokenizer(q, add_special_tokens=False)["input_ids"], tokenizer(x, add_special_tokens=False)["input_ids"])
            for q, x in qa[:n]]


def _cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "batch_size": 4, "max_length": 64, "lr": 2e-2, "warmup_ratio": 0.0,
                          "checkpoint_every": 6, **overrides})


@pytest.mark.parametrize("zero_stage", [0, 2, 3])
def test_deepspeed_engine_trains_and_checkpoints_reload_exactly(tmp_path, tiny_tokenizer, zero_stage):
    import deepspeed

    seen = {}
    original = deepspeed.initialize

    def spy(*args, **kwargs):
        engine, optimizer, loader, scheduler = original(*args, **kwargs)
        seen["engine"], seen["optimizer"] = engine, optimizer
        return engine, optimizer, loader, scheduler

    deepspeed.initialize = spy
    try:
        model = registry.wrap(build_tiny_model(len(tiny_tokenizer)), "lora", {"r": 4}, "all-linear", seed=1)
        cfg = _cfg(zero_stage=zero_stage)
        result = trainer.train(model, regimes.SFT(_pairs(tiny_tokenizer), cfg, tiny_tokenizer.pad_token_id), cfg,
                               TrialDir(tmp_path), {"method": "lora"})
    finally:
        deepspeed.initialize = original
    assert type(seen["engine"]).__name__ == "DeepSpeedEngine"
    # DeepSpeed built the optimizer from its config (AdamW); ZeRO stages wrap it in their own optimizer.
    expected = {0: "AdamW", 2: "DeepSpeedZeroOptimizer", 3: "DeepSpeedZeroOptimizer_Stage3"}[zero_stage]
    assert type(seen["optimizer"]).__name__ == expected
    assert result.status == "completed" and result.steps == 12
    losses = [r["loss"] for r in result.log]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    assert [c.name for c in result.checkpoints] == ["step_000006", "step_000012"]

    state, meta = checkpoints.load(result.checkpoints[-1])
    assert meta["step"] == 12 and meta["tensors"] == len(state)
    fresh = registry.wrap(build_tiny_model(len(tiny_tokenizer)), "lora", {"r": 4}, "all-linear", seed=1)
    registry.load_trainable_state(fresh, state)
    ids = torch.tensor([_pairs(tiny_tokenizer)[0][0]])
    model.eval(), fresh.eval()
    with torch.no_grad():
        if zero_stage == 3:  # the trained model's parameters are partitioned; gather to run it directly
            with deepspeed.zero.GatheredParameters(list(model.parameters())):
                trained = model(input_ids=ids).logits
        else:
            trained = model(input_ids=ids).logits
        torch.testing.assert_close(fresh(input_ids=ids).logits, trained, atol=1e-6, rtol=0)


def test_non_finite_loss_stops_the_trial_with_a_reason(tmp_path, tiny_tokenizer):
    model = registry.wrap(build_tiny_model(len(tiny_tokenizer)), "lora", {"r": 2}, "all-linear")
    with torch.no_grad():  # poison a frozen weight: the forward pass turns into NaN at once
        model.base_model.model.model.layers[0].mlp.down_proj.base_layer.weight.fill_(float("nan"))
    cfg = _cfg()
    result = trainer.train(model, regimes.SFT(_pairs(tiny_tokenizer), cfg, tiny_tokenizer.pad_token_id), cfg,
                           TrialDir(tmp_path), {})
    assert result.status == "failed" and "non-finite loss" in result.failure_reason and "step 1" in result.failure_reason
    assert result.checkpoints == []


def test_truncated_or_tampered_checkpoint_is_rejected(tmp_path, tiny_tokenizer):
    model = registry.wrap(build_tiny_model(len(tiny_tokenizer)), "lora", {"r": 2}, "all-linear")
    directory = checkpoints.save(model, tmp_path / "step_1", {"step": 1})
    weights = directory / checkpoints.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(checkpoints.CheckpointError, match="sha256"):
        checkpoints.load(directory)
    (directory / checkpoints.META_FILE).unlink()
    with pytest.raises(checkpoints.CheckpointError, match="missing"):
        checkpoints.load(directory)


def test_collate_masks_prompt_and_padding_and_keeps_answers():
    batch = regimes.collate([([1, 2, 3, 4, 5], [6, 7]), ([8], [9])], max_length=4, pad_id=0)
    assert batch["input_ids"].tolist() == [[4, 5, 6, 7], [8, 9, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 7], [-100, 9, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_overlong_examples_are_dropped_whole_when_asked_never_cut():
    pairs = [([1, 2, 3, 4, 5], [6, 7]), ([8], [9]), ([1, 2], [3, 4])]
    assert regimes.fitting(pairs, 4) == [([8], [9]), ([1, 2], [3, 4])]
    with pytest.raises(ValueError, match="train.max_length = 1: every one of the 3 training examples is longer"):
        regimes.fitting(pairs, 1)


def test_warmup_cosine_schedule_shape():
    factor = trainer.warmup_cosine(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=1e-9) and factor(100) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", registry.names())
def test_every_method_trains_on_the_deepspeed_engine(tmp_path, tiny_tokenizer, method):
    pairs = _pairs(tiny_tokenizer)
    first = regimes.collate(pairs[:4], 64, tiny_tokenizer.pad_token_id)
    model = registry.wrap(build_tiny_model(len(tiny_tokenizer)), method, registry.get(method).tiny, "all-linear",
                          init_batch=first)
    before = registry.trainable_state(model)
    cfg = _cfg(steps=3, checkpoint_every=3)
    result = trainer.train(model, regimes.SFT(pairs, cfg, tiny_tokenizer.pad_token_id), cfg, TrialDir(tmp_path),
                           {"method": method})
    assert result.status == "completed" and len(result.log) == 3
    assert all(r["step_s"] > 0 for r in result.log)
    after = registry.trainable_state(model)
    assert any(not torch.equal(before[n], after[n]) for n in before), f"{method}: no parameter moved"


@pytest.mark.slow
def test_a_lock_left_by_a_killed_start_does_not_hang_the_next_one():
    """A process killed while torch held the op's build lock leaves the lock file behind; without our
    kernel-held guard every later DeepSpeed start on the machine waited on it forever (seen in CI)."""
    import subprocess
    import sys

    leftover = trainer.shm_comm_build_dir() / "lock"
    leftover.touch()  # what a process SIGKILLed inside torch's load leaves
    start = ("from orchestrator.trials import trainer; trainer.init_distributed(); "
             "import torch.distributed as d; print('rank', d.get_rank(), 'of', d.get_world_size())")
    done = subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 0 of 1" in done.stdout
    assert not leftover.exists()


@pytest.mark.slow
def test_a_group_a_launcher_made_still_loads_the_op_under_our_guard():
    """Ray Train makes the process group before our trainer runs. The op must still be loaded through our
    guarded load (DeepSpeed then finds it cached): an unguarded load inside DeepSpeed's engine raced with
    a guarded one in a parallel test and lost its lock file ("No such file or directory: .../lock")."""
    import subprocess
    import sys

    start = ("import os, torch.distributed as d; from orchestrator.process import free_port; "
             "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())); "
             "d.init_process_group('gloo', rank=0, world_size=1); "  # as a launcher does
             "from orchestrator.trials import trainer; trainer.init_distributed(); "
             "from deepspeed.ops.op_builder.builder import OpBuilder; "
             "print('cached' if trainer.SHM_COMM_OP in OpBuilder._loaded_ops else 'not loaded')")
    done = subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "cached"
