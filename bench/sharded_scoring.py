"""Scoring a checkpoint with every rank of a data-parallel trial: 2 Ray Train workers x 1 thread, each scoring
its share of the chunks (`evals.runner.evaluate_on_ranks`, as `orchestrator.trials.scoring.evaluate` does in
a trial), vs 1 worker x 1 thread scoring them all - a trial's per-rank resources - and, for scale, 1 worker
x 2 threads (the same cores as the two workers). The default model (SmolLM2-135M) with a LoRA r8 adapter,
the arithmetic target suite (generation + answer likelihood) and the `quick` retention suite, the same items
for all. Metric: seconds per scored checkpoint, rank 0's wall clock from a barrier to the gathered scores;
goal: 2 workers <= 0.6x one worker, with identical scores. The speed-up one worker gets from a second
thread is recorded beside it: on a machine whose second core adds little, no sharding can do better.

    python -m bench.sharded_scoring [--items 64]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = 0.6


def _rank(config: dict[str, Any]) -> None:
    """One rank: the default model with a LoRA adapter, scored on the suites together with the other ranks."""
    import torch

    from methods import registry
    from orchestrator.config import EvalConfig, ModelConfig
    from orchestrator.trials import models, scoring

    torch.set_num_threads(config["threads"])
    model, tokenizer = models.load(ModelConfig(name="smollm2-135m"))
    adapted = registry.wrap(model, "lora", {"r": 8}, "all-linear", seed=0)
    for name, weight in adapted.named_parameters():  # a trained-looking adapter: B = 0 would score the base
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.02, generator=torch.Generator().manual_seed(len(name)))
    cfg = EvalConfig(target_suite="arithmetic", retention_suite="quick", max_items=config["items"], batch_size=16)
    torch.distributed.barrier()
    began = time.perf_counter()
    scores = scoring.evaluate(adapted, tokenizer, cfg)
    seconds = time.perf_counter() - began
    if torch.distributed.get_rank() == 0:
        Path(config["out"]).write_text(json.dumps({"seconds": seconds, "scores": scores}))


def measure(workers: int, threads: int, items: int) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        TorchTrainer(_rank, train_loop_config={"threads": threads, "items": items, "out": str(out)},
                     torch_config=TorchConfig(backend="gloo"),
                     scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": threads}),
                     run_config=RunConfig(name=f"bench-score-w{workers}", storage_path=tmp)).fit()
        return json.loads(out.read_text())


def main() -> None:
    import ray

    from bench.common import record
    from bench.data_parallel import start_ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    args = parser.parse_args()
    start_ray(num_cpus=2)
    one = measure(1, 1, args.items)
    two = measure(2, 1, args.items)
    one_two_threads = measure(1, 2, args.items)
    ray.shutdown()
    identical = two["scores"] == one["scores"]  # one thread each: the same arithmetic, so exactly equal
    ratio = two["seconds"] / one["seconds"]
    record("sharded_scoring", "seconds per scored checkpoint, 2 workers x 1 thread / 1 worker x 1 thread",
           two["seconds"], one["seconds"], f"<= {GOAL}x with identical scores", ratio <= GOAL and identical,
           identical_scores=identical, items_per_task=args.items, model="SmolLM2-135M + LoRA r8",
           suites={"target": "arithmetic", "retention": "quick"},
           seconds={"two_workers_1_thread": two["seconds"], "one_worker_1_thread": one["seconds"],
                    "one_worker_2_threads": one_two_threads["seconds"]},
           scores={kind: two["scores"][kind]["score"] for kind in ("target", "retention")},
           # what the machine gives a second core on this job at all: the ceiling of the sharding's speed-up
           two_thread_speedup=one["seconds"] / one_two_threads["seconds"],
           sharding_speedup=one["seconds"] / two["seconds"])


if __name__ == "__main__":
    main()
