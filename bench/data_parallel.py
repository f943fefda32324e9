"""Data-parallel overhead on one machine: a trial's training on 2 Ray Train workers x 1 thread vs 1 worker x
2 threads (the same cores), on the default model (SmolLM2-135M, LoRA r8, SFT), the same global batch per
step (2 x micro-batch b vs 1 x micro-batch b with grad_accum 2), both through the project's trainer in Ray
Train workers (gloo + DeepSpeed's CPU accelerator). Metric: training tokens/s (median step after a warm-up
step); goal: 2 workers >= 0.8x one worker. What 2 workers add is a gradient all-reduce per step and a
second copy of the model; what they save is nothing on 2 cores, so this measures the price of the
data-parallel path where it cannot pay off.

    python -m bench.data_parallel [--steps 6] [--batch 4] [--length 128]

`measure` is shared with bench/gpu_check.py (the same trial step on GPUs: bf16, NCCL, fused AdamW).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

GOAL = 0.8


def _rank(config: dict[str, Any]) -> None:
    """One rank: the default model, wrapped, trained by orchestrator.trials.trainer; rank 0 writes what it saw."""
    import torch

    from bench.training_throughput import data
    from methods import registry
    from orchestrator.config import ModelConfig, TrainConfig
    from orchestrator.storage.sweep_dir import TrialDir
    from orchestrator.trials import models, regimes, trainer

    model, tokenizer = models.load(ModelConfig(name=config["model"], dtype=config["dtype"]))
    wrapped = registry.wrap(model, "lora", {"r": 8}, "all-linear")  # DeepSpeed moves it to the rank's device
    cfg = TrainConfig(steps=config["steps"] + 1, batch_size=config["batch"], grad_accum=config["accum"],
                      max_length=config["length"], lr=1e-5, checkpoint_every=10**6, zero_stage=config["zero"],
                      threads=config["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        result = trainer.train(wrapped, regimes.SFT(data(len(tokenizer), config["length"]), cfg, tokenizer.pad_token_id),
                               cfg, TrialDir(tmp), {"method": "lora"})
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    peaks: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(peaks, peak)
    if torch.distributed.get_rank() == 0:
        tokens_per_step = result.global_batch * config["length"]
        step_s = statistics.median(r["step_s"] for r in result.log[1:])
        Path(config["out"]).write_text(json.dumps({
            "tokens_per_s": tokens_per_step / step_s, "step_s": step_s, "world_size": result.world_size,
            "global_batch": result.global_batch, "peak_gib_per_rank": peaks,
            "params": sum(p.numel() for p in wrapped.parameters()), "trainable": registry.count_trainable(wrapped),
            "losses": [r["loss"] for r in result.log]}))


def measure(workers: int, threads: int, *, steps: int, batch: int, accum: int, length: int, zero: int = 0,
            gpus: float = 0.0, dtype: str = "float32", model: str = "smollm2-135m") -> dict[str, Any]:
    """Train `steps` (+1 warm-up) steps on `workers` Ray Train workers; what rank 0 measured."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        config = {"steps": steps, "batch": batch, "accum": accum, "length": length, "zero": zero, "threads": threads,
                  "dtype": dtype, "model": model, "out": str(out)}
        TorchTrainer(_rank, train_loop_config=config, torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
                     scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                                  resources_per_worker={"CPU": threads, **({"GPU": gpus} if gpus else {})}),
                     run_config=RunConfig(name=f"bench-w{workers}", storage_path=tmp)).fit()
        return json.loads(out.read_text())


def start_ray(**init: Any) -> None:
    """A local Ray whose workers import this checkout's bench/ (not an installed package) like the driver."""
    import ray

    root = str(Path(__file__).resolve().parents[1])
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster, as the sweep starts it
    ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": root}}, **init)


def main() -> None:
    import ray

    from bench.common import record

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    start_ray(num_cpus=2)
    one = measure(1, 2, steps=args.steps, batch=args.batch, accum=2, length=args.length)
    two = measure(2, 1, steps=args.steps, batch=args.batch, accum=1, length=args.length)
    ray.shutdown()
    ratio = two["tokens_per_s"] / one["tokens_per_s"]
    record("data_parallel_overhead", "training tokens/s, 2 workers x 1 thread / 1 worker x 2 threads",
           two["tokens_per_s"], one["tokens_per_s"], f">= {GOAL}x", ratio >= GOAL,
           model="SmolLM2-135M LoRA r8 SFT", global_batch=two["global_batch"], length=args.length, steps=args.steps,
           step_s={"two_workers": two["step_s"], "one_worker": one["step_s"]},
           first_losses={"two_workers": two["losses"][:3], "one_worker": one["losses"][:3]})


if __name__ == "__main__":
    main()
