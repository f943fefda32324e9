"""Sharded evaluation on a Ray Data actor pool: each actor loads its model once and scores whole chunks.

The driver renders every task's requests into the same fixed chunks an in-process run scores
(`suites.task_chunks`), so results are identical for any pool size, and identical to `evaluate_suite`.
What model an actor holds is given by `loader`, a picklable zero-argument callable returning
(model, tokenizer): a base model, a checkpoint, or interpolated weights - the caller decides, so this
module needs nothing from the orchestrator.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import torch

from evals import suites

Loader = Callable[[], tuple[Any, Any]]


class ChunkScorer:
    """A Ray Data actor: the model is loaded in __init__, once per actor, then every chunk sent to it
    is scored with it."""

    def __init__(self, loader: Loader, threads: int, batch_size: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.model, self.tokenizer = loader()
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [json.dumps(suites.score_chunk(self.model, self.tokenizer, json.loads(payload), self.batch_size))
                   for payload in batch["payload"]]
        return {"key": batch["key"], "result": np.array(results, dtype=object)}


def evaluate(loader: Loader, tokenizer: Any, suite_refs: dict[str, suites.SuiteRef], split: str = "test",
             max_items: int | None = None, batch_size: int = 16, pool_size: int = 1,
             cpus_per_actor: float = 0.5, gpus_per_actor: float = 0.0) -> dict[str, dict[str, Any]]:
    """{kind: suite result} for each (kind -> suite) in `suite_refs`, scored on `pool_size` actors.
    Fractional CPUs per actor by default: whole CPUs for every actor starve Ray Data's own read task on
    small machines (a deadlock seen on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="error", _node_ip_address="127.0.0.1")
    tasks = {kind: [suites.load_task(t) for t in suites.suite_task_names(kind, ref)] for kind, ref in suite_refs.items()}
    chunks = [chunk for kind in tasks for task in tasks[kind]
              for chunk in suites.task_chunks(task, tokenizer, split, max_items)]
    rows = [{"key": i, "payload": json.dumps(chunk)} for i, chunk in enumerate(chunks)]
    scored = ray.data.from_items(rows).map_batches(
        ChunkScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool_size),
        fn_constructor_kwargs={"loader": loader, "threads": max(1, int(cpus_per_actor)), "batch_size": batch_size},
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None).take_all()
    by_key = {int(row["key"]): json.loads(row["result"]) for row in scored}
    per_task: dict[str, list[dict[str, Any]]] = {}
    for i, chunk in enumerate(chunks):  # chunk order, not arrival order
        per_task.setdefault(chunk["task"], []).extend(by_key[i])
    return {kind: suites.aggregate_suite(suite_refs[kind], {t.name: suites.aggregate_task(t, per_task[t.name])
                                                            for t in tasks[kind]})
            for kind in tasks}
