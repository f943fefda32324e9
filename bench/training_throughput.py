"""Training throughput of a PEFT-Arena trial step (DeepSpeed engine + our bookkeeping) vs a bare peft +
torch AdamW loop: same model, method, batch, sequence length and data, in one process. Goal >= 0.95x.
Also the achieved FLOP/s of the step against a plain fp32 matmul measured in the same run.

    python -m bench.training_throughput [--batch 4] [--length 128] [--steps 6]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench.common import median, record
from methods import registry
from orchestrator.config import ModelConfig, TrainConfig
from orchestrator.storage.sweep_dir import TrialDir
from orchestrator.trials import models, regimes, trainer

GOAL = 0.95
METHODS = {"lora": {"r": 8}, "oft": {"block_size": 32}}


def data(vocab: int, length: int) -> list[tuple[list[int], list[int]]]:
    generator = torch.Generator().manual_seed(0)
    return [([], torch.randint(3, vocab, (length,), generator=generator).tolist()) for _ in range(64)]


def ours(method: str, setting: dict, batch: int, length: int, steps: int) -> tuple[float, int, int]:
    """Median seconds per step (after a warm-up step), the total and the trainable parameter counts."""
    model, tokenizer = models.load(ModelConfig())
    wrapped = registry.wrap(model, method, setting, "all-linear")
    cfg = TrainConfig(steps=steps + 1, batch_size=batch, max_length=length, lr=1e-5, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        sft = regimes.SFT(data(len(tokenizer), length), cfg, tokenizer.pad_token_id)
        result = trainer.train(wrapped, sft, cfg, TrialDir(tmp), {})
    return median([r["step_s"] for r in result.log[1:]]), sum(p.numel() for p in wrapped.parameters()), \
        registry.count_trainable(wrapped)


def bare(method: str, setting: dict, batch: int, length: int, steps: int) -> float:
    """The loop a user would write: peft model, torch AdamW, the same batches."""
    model, tokenizer = models.load(ModelConfig())
    wrapped = registry.wrap(model, method, setting, "all-linear")
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-5)
    stream = regimes.batches(data(len(tokenizer), length), batch, 0)
    wrapped.train()
    times = []
    for _ in range(steps + 1):
        began = time.perf_counter()
        out = wrapped(**regimes.collate(next(stream), length, tokenizer.pad_token_id))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - began)
    return median(times[1:])


def matmul_flops(size: int = 2048, repeats: int = 8) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    tokens = args.batch * args.length
    peak = matmul_flops()
    for method, setting in METHODS.items():
        baseline_s = bare(method, setting, args.batch, args.length, args.steps)
        ours_s, total, trainable = ours(method, setting, args.batch, args.length, args.steps)
        # forward 2N + backward through activations 2N per token (frozen weights get no weight gradients)
        achieved = 4 * total * tokens / ours_s
        record(f"training_throughput_{method}", "tokens/s of one optimizer step (higher is better)",
               tokens / ours_s, tokens / baseline_s, f">= {GOAL}x a bare peft + AdamW loop",
               tokens / ours_s >= GOAL * tokens / baseline_s, method=method, setting=setting, batch=args.batch,
               length=args.length, threads=torch.get_num_threads(), trainable=trainable, total_params=total,
               achieved_flops=achieved, matmul_flops=peak, fraction_of_matmul_peak=achieved / peak)


if __name__ == "__main__":
    main()
