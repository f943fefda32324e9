"""The sweep's evaluation service (eval.mode: pool) on the default model, three figures in one run:

1. pool overhead: the retention suite scored for 4 checkpoints through the service with a pool of one
   actor holding all cores vs in this process one after another (each side loads each checkpoint once);
   the service's start-up, paid once per sweep, is recorded beside it; goal <= 1.1x;
2. training blocked by evaluation: a real trial with 4 checkpoints and eval.mode pool, the time its
   training loop waited on evaluation (hand-offs) vs its training time; goal <= 5%;
3. rewinding throughput: the same path points (trajectory + interpolation) scored on a pool of 2 actors
   x 1 core vs one by one in this process (2 cores): points per second, identical scores required.

    python -m bench.eval_service [--items 32] [--steps 8]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import record
from evals import runner, service, suites
from orchestrator import config
from orchestrator.storage.sweep_dir import Status, SweepDir
from orchestrator.trials import checkpoints, models, scoring, trial

ALPHAS = (0.25, 0.5, 0.75)


def trial_on_the_pool(out: Path, steps: int, items: int) -> dict[str, Any]:
    """A default-model LoRA trial with 4 checkpoints, scored by a pool of one (figure 2); its checkpoints
    serve figures 1 and 3."""
    cfg = config.validate({"name": "bench-eval-service", "output_dir": str(out),
                           "train": {"steps": steps, "checkpoint_every": steps // 4},
                           "eval": {"max_items": items, "mode": "pool", "pool_size": 1, "cpus_per_actor": 1.0},
                           "methods": [{"name": "lora", "settings": [{"r": 8}]}]})
    handle = scoring.start_service(cfg.output_dir, cfg.eval, cfg.model)
    try:
        result = trial.run(cfg, "lora", {"r": 8}, SweepDir.of(cfg).trial("lora"))
    finally:
        service.stop(handle)
    assert result["status"] == Status.COMPLETED, result.get("failure_reason")
    timings = result["timings"]
    record("eval_service_training_blocked", "seconds the training loop waited on evaluation / its training seconds",
           timings["eval_s"], timings["train_s"], "<= 5% of training time", timings["eval_s"] <= 0.05 * timings["train_s"],
           checkpoints=len(result["checkpoints"]), steps=steps, items=items, eval_wait_s=timings["eval_s"],
           train_s=timings["train_s"], collect_after_training_s=timings["eval_collect_s"],
           note="on 2 cores the pool's actor scores while the trial trains, so training itself runs slower than "
                "it would alone: compare train_s with an inline trial's before choosing pool on a laptop")
    return {"cfg": cfg, "result": result}


def pool_overhead(cfg: config.SweepConfig, paths: list[str], items: int) -> None:
    suite = {"retention": cfg.eval.retention_suite}
    tokenizer = models.load_tokenizer(cfg.model)
    began = time.perf_counter()
    direct = []
    for path in paths:
        model, _ = checkpoints.load_for_eval({"checkpoint": path})
        direct.append({"retention": suites.evaluate_suite(model, tokenizer, "retention", cfg.eval.retention_suite,
                                                          max_items=items, batch_size=cfg.eval.batch_size)})
    direct_s = time.perf_counter() - began
    import ray

    # the actor gets the cores the in-process run has (its torch threads follow its CPUs)
    pool = cfg.eval.model_copy(update={"cpus_per_actor": float(os.cpu_count())})
    began = time.perf_counter()  # the start-up a sweep pays once: actor process, imports, Ray Data planning
    handle = scoring.start_service("bench-pool-overhead", pool, cfg.model)
    startup_s = time.perf_counter() - began
    rendered = runner.render(tokenizer, suite, cfg.eval.split, items)
    began = time.perf_counter()
    for i, path in enumerate(paths):
        ray.get(handle.submit.remote(str(i), {"checkpoint": path}, rendered.chunks))
    pooled = [runner.assemble(rendered, ray.get(handle.collect.remote(str(i)))) for i in range(len(paths))]
    pool_s = time.perf_counter() - began
    service.stop(handle)
    record("eval_service_pool_overhead", f"seconds to score the {cfg.eval.retention_suite} retention suite for "
           f"{len(paths)} checkpoints (lower is better)", pool_s, direct_s, "<= 1.1x in-process",
           pool_s <= 1.1 * direct_s, identical_scores=pooled == direct, checkpoints=len(paths), items=items,
           service_startup_once_per_sweep_s=startup_s, with_startup_ratio=(pool_s + startup_s) / direct_s)


def rewinding_throughput(cfg: config.SweepConfig, paths: list[str], items: int) -> None:
    points = [{"checkpoint": p} for p in paths] + [{"checkpoint": paths[-1], "alpha": a} for a in ALPHAS]
    refs = cfg.eval.suite_refs()
    began = time.perf_counter()
    one_by_one = []
    for spec in points:
        model, tokenizer = checkpoints.load_for_eval(spec)
        one_by_one.append({kind: suites.evaluate_suite(model, tokenizer, kind, ref, "validation", items,
                                                       cfg.eval.batch_size) for kind, ref in refs.items()})
    inline_s = time.perf_counter() - began
    began = time.perf_counter()
    pooled = runner.evaluate_specs(checkpoints.load_for_eval, models.load_tokenizer(cfg.model), points, refs,
                                   "validation", items, cfg.eval.batch_size, pool_size=2, cpus_per_actor=1.0)
    pool_s = time.perf_counter() - began
    record("eval_service_rewinding_throughput", "path points scored per second (higher is better)",
           len(points) / pool_s, len(points) / inline_s, "recorded (same scores required)", pooled == one_by_one,
           identical_scores=pooled == one_by_one, points=len(points), items=items, pool_size=2,
           pool_s=pool_s, one_by_one_s=inline_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=32, help="items per task")
    parser.add_argument("--steps", type=int, default=8, help="training steps (4 checkpoints)")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="error",
             _node_ip_address="127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        ran = trial_on_the_pool(Path(tmp) / "sweep", args.steps, args.items)
        paths = [c["path"] for c in ran["result"]["checkpoints"]]
        pool_overhead(ran["cfg"], paths, args.items)
        rewinding_throughput(ran["cfg"], paths, args.items)
    ray.shutdown()


if __name__ == "__main__":
    main()
