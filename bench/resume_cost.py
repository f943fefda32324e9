"""What exact resume costs at a checkpoint on the default model: the time to write a checkpoint with its
resume state (optimizer moments, step, RNG) vs the weights alone, and the bytes of each, for LoRA r8 and
full finetuning (the largest state), through the trainer's own DeepSpeed engine.

    python -m bench.resume_cost [--methods lora,full] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import median, record
from methods import registry
from orchestrator.config import ModelConfig, TrainConfig
from orchestrator.trials import checkpoints, models, regimes, resume, trainer

SETTINGS = {"lora": {"r": 8}, "full": {}}


def measure(method: str, repeats: int) -> dict:
    model, tokenizer = models.load(ModelConfig())
    wrapped = registry.wrap(model, method, SETTINGS.get(method, {}), "all-linear")
    pairs = [([], torch.randint(3, len(tokenizer), (64,), generator=torch.Generator().manual_seed(i)).tolist())
             for i in range(8)]
    cfg = TrainConfig(steps=1, batch_size=2, max_length=64, lr=1e-5)
    sft = regimes.SFT(pairs, cfg, tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        import deepspeed

        trainer.init_distributed()  # the engine a trial trains with, after one optimizer step
        params = [p for p in wrapped.parameters() if p.requires_grad]
        engine, _, _, _ = deepspeed.initialize(model=wrapped, model_parameters=params,
                                               config=trainer.deepspeed_config(cfg, torch.float32))
        loss, _ = sft.loss(engine, engine.device)
        engine.backward(loss)
        engine.step()
        weights_s, full_s = [], []
        for i in range(repeats):
            began = time.perf_counter()
            plain = checkpoints.save(wrapped, Path(tmp) / f"w{i}", {"method": method, "step": 1})
            weights_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            directory = checkpoints.save(wrapped, Path(tmp) / f"r{i}", {"method": method, "step": 1})
            checkpoints.save_resume(directory, *resume.capture(engine, wrapped, sft, 1))
            full_s.append(time.perf_counter() - began)
        sizes = checkpoints.sizes(directory)
        assert checkpoints.sizes(plain)["resume_state"] == 0
        engine.destroy()
    return {"weights_s": median(weights_s), "with_state_s": median(full_s), "sizes": sizes,
            "trainable": registry.count_trainable(wrapped)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for method in args.methods.split(","):
        got = measure(method, args.repeats)
        record(f"resume_state_cost_{method}", "seconds to write a checkpoint with its resume state vs the weights "
               "alone (lower is better)", got["with_state_s"], got["weights_s"],
               "reported (no goal): what an exact resume costs per checkpoint", True, method=method,
               trainable=got["trainable"], weights_bytes=got["sizes"]["weights"],
               resume_state_bytes=got["sizes"]["resume_state"],
               bytes_ratio=(got["sizes"]["weights"] + got["sizes"]["resume_state"]) / got["sizes"]["weights"])


if __name__ == "__main__":
    main()
