"""Sharded evaluation on a Ray Data actor pool: rows are (model spec, chunks) pairs; each actor keeps the
last few models it loaded, so one actor scores many chunks of many models without reloading.

The driver renders every task's requests into the same fixed chunks an in-process run scores
(`suites.task_chunks`), so results are identical for any pool size, and identical to `evaluate_suite`.
What a spec means is given by `load`, a picklable callable spec -> (model, tokenizer): a base model, a
checkpoint, or interpolated weights - the caller decides, so this module needs nothing from the
orchestrator. `evals.service` feeds the same actors from a queue for a whole sweep. The ranks of a
data-parallel trial share the same chunks among themselves instead (`evaluate_on_ranks`).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from evals import suites

Load = Callable[[dict[str, Any]], tuple[Any, Any]]
MODELS_KEPT = 2  # per actor: checkpoints handed off close together interleave their chunks; more costs memory


def spec_key(spec: dict[str, Any]) -> str:
    """The identity of a model spec (what an actor's cache and a scoring request are keyed by)."""
    return json.dumps(spec, sort_keys=True)


@dataclass
class Rendered:
    """A set of suites cut into chunks: the same for every model scored on them."""

    suite_refs: dict[str, suites.SuiteRef]
    tasks: dict[str, list[suites.Task]]
    chunks: list[dict[str, Any]]


def render(tokenizer: Any, suite_refs: dict[str, suites.SuiteRef], split: str = "test",
           max_items: int | None = None) -> Rendered:
    tasks = {kind: [suites.load_task(t) for t in suites.suite_task_names(kind, ref)] for kind, ref in suite_refs.items()}
    chunks = [chunk for kind in tasks for task in tasks[kind]
              for chunk in suites.task_chunks(task, tokenizer, split, max_items)]
    return Rendered(suite_refs, tasks, chunks)


def assemble(rendered: Rendered, results: list[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """{kind: suite result} from each chunk's per-item results, given in chunk order (not arrival order)."""
    per_task: dict[str, list[dict[str, Any]]] = {}
    for chunk, scored in zip(rendered.chunks, results, strict=True):
        per_task.setdefault(chunk["task"], []).extend(scored)
    return {kind: suites.aggregate_suite(rendered.suite_refs[kind],
                                         {t.name: suites.aggregate_task(t, per_task[t.name]) for t in tasks})
            for kind, tasks in rendered.tasks.items()}


def evaluate_on_ranks(model: Any, tokenizer: Any, suite_refs: dict[str, suites.SuiteRef], split: str = "test",
                      max_items: int | None = None, batch_size: int = 16) -> dict[str, dict[str, Any]]:
    """{kind: suite result}, scored by every rank of torch's process group together: rank r scores chunks
    r, r + W, ... of the same chunks one process scores, and every rank gets all of them back (one
    all_gather of plain data), so the numbers are one process's whatever the world size. Every rank must
    call it, with the same model weights; outside a process group it is one process scoring everything.
    Round-robin over all tasks' chunks, not per task, keeps each rank busy on a suite of small tasks."""
    rendered = render(tokenizer, suite_refs, split, max_items)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    mine = {i: suites.score_chunk(model, tokenizer, chunk, batch_size)
            for i, chunk in enumerate(rendered.chunks) if i % world == rank}
    if world > 1:
        shares: list[Any] = [None] * world
        torch.distributed.all_gather_object(shares, mine)
        mine = {i: scored for share in shares for i, scored in share.items()}
    return assemble(rendered, [mine[i] for i in range(len(rendered.chunks))])


class ChunkScorer:
    """A Ray Data actor: scores each row's chunks with the row's model, loading a model only when it is not
    among the last MODELS_KEPT it used."""

    def __init__(self, load: Load, threads: int, batch_size: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.load = load
        self.batch_size = batch_size
        self.models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self.loads = 0

    def model(self, key: str) -> tuple[Any, Any]:
        if key in self.models:
            self.models.move_to_end(key)
        else:
            while len(self.models) >= MODELS_KEPT:
                self.models.popitem(last=False)
            self.models[key] = self.load(json.loads(key))
            self.loads += 1
        return self.models[key]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each row's payload is a list of chunks of its model; its result, their per-item results."""
        results = []
        for key, payload in zip(batch["spec"], batch["payload"]):
            model, tokenizer = self.model(str(key))
            results.append(json.dumps([suites.score_chunk(model, tokenizer, chunk, self.batch_size)
                                       for chunk in json.loads(payload)]))
        return {"key": batch["key"], "result": np.array(results, dtype=object)}


def scorer_stage(dataset: Any, load: Load, batch_size: int, pool_size: int, cpus_per_actor: float,
                 gpus_per_actor: float) -> Any:
    """The dataset's rows scored on `pool_size` ChunkScorer actors, one row per call (a row is the unit
    Ray Data retries when an actor dies). Fractional CPUs per actor by default: whole CPUs for every actor
    starve Ray Data's own read task on small machines (a deadlock seen on 2 cores)."""
    import ray

    return dataset.map_batches(
        ChunkScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool_size),
        fn_constructor_kwargs={"load": load, "threads": max(1, int(cpus_per_actor)), "batch_size": batch_size},
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)


def ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="error", _node_ip_address="127.0.0.1")


def evaluate_specs(load: Load, tokenizer: Any, specs: list[dict[str, Any]], suite_refs: dict[str, suites.SuiteRef],
                   split: str = "test", max_items: int | None = None, batch_size: int = 16, pool_size: int = 1,
                   cpus_per_actor: float = 0.5, gpus_per_actor: float = 0.0) -> list[dict[str, dict[str, Any]]]:
    """{kind: suite result} of each spec, all specs in one dataset. A row is one spec's share of the chunks:
    all of them when there are at least as many specs as actors (each model loaded once, the specs in
    parallel), else split so every actor has work."""
    import ray

    ensure_ray()
    rendered = render(tokenizer, suite_refs, split, max_items)
    shares = max(1, -(-pool_size // len(specs)))  # rows per spec
    indices = np.array_split(np.arange(len(rendered.chunks)), min(shares, len(rendered.chunks)))
    rows = [{"key": f"{s}:{r}", "spec": spec_key(spec), "payload": json.dumps([rendered.chunks[i] for i in share])}
            for s, spec in enumerate(specs) for r, share in enumerate(indices)]
    scored = scorer_stage(ray.data.from_items(rows), load, batch_size, pool_size, cpus_per_actor,
                          gpus_per_actor).take_all()
    by_key = {str(row["key"]): json.loads(row["result"]) for row in scored}
    return [assemble(rendered, [chunk for r in range(len(indices)) for chunk in by_key[f"{s}:{r}"]])
            for s in range(len(specs))]
