"""How precisely a retention suite sees forgetting: the 95% paired-bootstrap half-width of forgetting for a
sweep's final checkpoints, with the multiple-choice tasks scored by accuracy (`acc_norm`), by the gold
choice's share of the choices (`gold_prob`) and by the gold answer's per-token probability
(`answer_token_prob`, what the demo's suite scores), on the same items. Baseline: acc_norm.
Goal: a half-width <= 0.01 (forgetting of a point is then resolvable).

Needs a finished sweep on the default model, e.g. `make demo`:

    python -m bench.retention_halfwidth runs/quick [--items 40] [--trials ID,ID]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np

from bench.common import record
from evals import suites, uncertainty
from orchestrator.storage.sweep_dir import SweepDir, has_final_point
from orchestrator.trials import checkpoints

MC_METRICS = ("acc_norm", "gold_prob", "answer_token_prob")  # the first is the baseline, the last ours


def score_items(spec: dict[str, Any], tasks: list[suites.Task]) -> dict[str, list[dict[str, Any]]]:
    """Raw per-item results (every field each scorer gives), so any of a task's metrics can be recomputed."""
    model, tokenizer = checkpoints.load_for_eval(spec)
    return {task.name: [r for chunk in suites.task_chunks(task, tokenizer, "test", task.n_items)
                        for r in suites.score_chunk(model, tokenizer, chunk)] for task in tasks}


def as_suite(per_task: dict[str, list[dict[str, Any]]], tasks: list[suites.Task], mc_metric: str) -> dict[str, Any]:
    out = {}
    for task in tasks:
        metric = mc_metric if task.scorer == "multiple_choice" else task.metric
        out[task.name] = {"metric": metric, "items": uncertainty.item_record(metric, per_task[task.name])}
        out[task.name]["score"] = float(uncertainty.task_metric(out[task.name]))
    return {"score": float(np.mean([t["score"] for t in out.values()])), "tasks": out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sweep_dir")
    parser.add_argument("--items", type=int, default=40, help="items per task (at most what its test split has)")
    parser.add_argument("--trials", help="comma-separated trial ids (default: every completed trial)")
    args = parser.parse_args()
    where = SweepDir.open(args.sweep_dir)
    cfg = where.load_config()
    results = [r for r in where.collect() if has_final_point(r) and not r.get("duplicate_of")]
    if args.trials:
        results = [r for r in results if r["trial_id"] in args.trials.split(",")]
    tasks = [dataclasses.replace(t, n_items=args.items) for t in
             map(suites.load_task, suites.suite_task_names("retention", cfg.eval.retention_suite))]
    clock = time.perf_counter()
    base = score_items({"model": cfg.model.model_dump()}, tasks)
    rows = []
    for result in results:
        tuned = score_items({"checkpoint": result["checkpoints"][-1]["path"]}, tasks)
        row = {"trial": result["trial_id"], "method": result["method"]}
        for metric in MC_METRICS:
            before, after = as_suite(base, tasks, metric), as_suite(tuned, tasks, metric)
            interval = uncertainty.paired_difference_ci(before, after)  # base - finetuned = forgetting
            row[metric] = {"forgetting": before["score"] - after["score"], "ci": interval,
                           "half_width": uncertainty.half_width(interval)}
        rows.append(row)
        print(row, flush=True)
    ours = max(r["answer_token_prob"]["half_width"] for r in rows)
    baseline = max(r["acc_norm"]["half_width"] for r in rows)
    record("retention_halfwidth", "widest forgetting half-width, MC as answer_token_prob vs acc_norm", ours, baseline,
           "half-width <= 0.01", ours <= 0.01, trials=rows, items={t.name: len(base[t.name]) for t in tasks},
           suite=cfg.eval.retention_suite, seconds=time.perf_counter() - clock)


if __name__ == "__main__":
    main()
