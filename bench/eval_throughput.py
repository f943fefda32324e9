"""Evaluation throughput. (1) Items/s of our multiple-choice scorer vs lm-evaluation-harness (HFLM,
zero-shot) on the same items and model, accuracies required identical; goal >= 2x. (2) Ray Data pool
overhead: a pool of one actor vs a direct in-process call on the same suite; goal <= 1.1x.

    python -m bench.eval_throughput [--items 40] [--pool-suite default] [--pool-items 64]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import record
from bench import lm_eval_bridge
from evals import runner, suites
from orchestrator.config import ModelConfig
from orchestrator.trials import checkpoints, models

TASKS = ("wordnet_nouns", "wordnet_verbs")


def scorer_vs_lm_eval(items: int) -> None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    model, tokenizer = models.load(ModelConfig())
    tasks = [suites.load_task(name) for name in TASKS]
    with tempfile.TemporaryDirectory() as tmp:
        names = [lm_eval_bridge.write_task(task, tokenizer, Path(tmp), max_items=items) for task in tasks]
        began = time.perf_counter()
        theirs = lm_eval_bridge.evaluate(model, tokenizer, names, Path(tmp))
        lm_eval_s = time.perf_counter() - began
    began = time.perf_counter()
    ours = {task.name: suites.score_task(model, tokenizer, task, max_items=items) for task in tasks}
    ours_s = time.perf_counter() - began
    count = sum(r["n"] for r in ours.values())
    identical = all(ours[t.name]["acc"] == theirs[n]["acc"] and ours[t.name]["acc_norm"] == theirs[n]["acc_norm"]
                    for t, n in zip(tasks, names))
    record("eval_throughput_vs_lm_eval", "multiple-choice items/s (higher is better)", count / ours_s,
           count / lm_eval_s, ">= 2x lm-eval HFLM, identical accuracies", identical and count / ours_s >= 2 * count / lm_eval_s,
           items=count, tasks=list(TASKS), identical_accuracies=identical,
           ours_accuracies={t: {"acc": r["acc"], "acc_norm": r["acc_norm"]} for t, r in ours.items()},
           lm_eval_accuracies={n: theirs[n] for n in names}, ours_s=ours_s, lm_eval_s=lm_eval_s)


def pool_overhead(suite: str, items: int) -> None:
    """Both sides load the model and score the same chunks; the pool also starts an actor process (imports,
    model load) and a Ray Data execution. That start-up is a fixed cost per `evaluate` call, so it is
    measured on a realistic suite (the default retention suite), and reported on its own too."""
    import ray

    # one logical CPU more than the actor takes: Ray Data's read task needs one, or the pool waits forever
    ray.init(num_cpus=os.cpu_count() + 1, include_dashboard=False, log_to_driver=False, logging_level="error",
             _node_ip_address="127.0.0.1")
    spec = {"model": ModelConfig().model_dump()}
    tokenizer = models.load(ModelConfig())[1]
    began = time.perf_counter()
    model, _ = checkpoints.load_for_eval(spec)
    direct = suites.evaluate_suite(model, tokenizer, "retention", suite, max_items=items)
    direct_s = time.perf_counter() - began
    del model
    began = time.perf_counter()
    pooled = runner.evaluate_specs(checkpoints.load_for_eval, tokenizer, [spec], {"retention": suite},
                                   max_items=items, pool_size=1, cpus_per_actor=float(os.cpu_count()))[0]["retention"]
    pool_s = time.perf_counter() - began
    ray.shutdown()
    record("eval_pool_overhead", f"seconds for the {suite} retention suite, model load included (lower is better)",
           pool_s, direct_s, "<= 1.1x a direct call", pool_s <= 1.1 * direct_s, identical_scores=pooled == direct,
           suite=suite, items=items, fixed_overhead_s=pool_s - direct_s,
           note="the difference is a fixed start-up per evaluate call (actor process, imports, model load, "
                "Ray Data planning); the chunks themselves take the same time in the actor as in-process")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--pool-suite", default="default")
    parser.add_argument("--pool-items", type=int, default=64)
    args = parser.parse_args()
    scorer_vs_lm_eval(args.items)
    pool_overhead(args.pool_suite, args.pool_items)


if __name__ == "__main__":
    main()
