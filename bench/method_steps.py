"""Step time of every registered method relative to LoRA, at a budget matched to LoRA r8, on the default
model, through the same DeepSpeed trainer a trial uses. Goal: every method <= 1.5x LoRA.

    python -m bench.method_steps [--batch 2] [--length 256] [--steps 4] [--method oft ...]
"""
from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import torch

from bench.common import median, record
from methods import budget, registry
from orchestrator import models, trainer
from orchestrator.config import ModelConfig, TrainConfig

GOAL = 1.5


def step_seconds(method: str, setting: dict, batch: int, length: int, steps: int) -> tuple[float, int]:
    """Median step time after one warm-up step, and the trainable count, for one method."""
    model, tokenizer = models.load(ModelConfig())
    generator = torch.Generator().manual_seed(0)
    pairs = [([], torch.randint(3, len(tokenizer), (length,), generator=generator).tolist()) for _ in range(64)]
    first = trainer.collate(pairs[:batch], length, tokenizer.pad_token_id)
    wrapped = registry.wrap(model, method, setting, "all-linear", init_batch=first)
    cfg = TrainConfig(steps=steps + 1, batch_size=batch, max_length=length, lr=1e-5, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        # checkpoint_every beyond the run: only the final checkpoint is written, after the timed steps
        result = trainer.train(wrapped, tokenizer.pad_token_id, pairs, cfg, Path(tmp), {"method": method})
    count = registry.count_trainable(wrapped)
    del model, wrapped
    gc.collect()
    return median([r["step_s"] for r in result.log[1:]]), count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--method", action="append")
    args = parser.parse_args()
    config = budget.load_model_config("smollm2-135m")
    lora_budget = budget.count_trainable(config, "lora", {"r": 8})
    lora_s, _ = step_seconds("lora", {"r": 8}, args.batch, args.length, args.steps)
    for method in args.method or [m for m in registry.names() if m != "lora"]:
        solution = budget.solve(config, method, lora_budget, tolerance=float("inf"))
        seconds, count = step_seconds(method, solution.setting, args.batch, args.length, args.steps)
        record(f"method_step_time_{method}", "seconds per optimizer step (lower is better)", seconds, lora_s,
               f"<= {GOAL}x LoRA r8", seconds <= GOAL * lora_s, method=method, setting=solution.setting,
               trainable=count, lora_trainable=lora_budget, batch=args.batch, length=args.length,
               threads=torch.get_num_threads(), dtype="float32")


if __name__ == "__main__":
    main()
