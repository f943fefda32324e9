"""One evaluation service per sweep: a Ray actor that keeps a single Ray Data pipeline running for the
sweep's whole life, so its fixed start-up (actor processes, imports, Ray Data planning) is paid once, not
per checkpoint.

Ray Data has no source that stays open for rows submitted later, so a small Datasource whose one read
task takes rows from a Ray queue until it is told to stop is written here; with a block size of one row,
Ray Data's streaming executor passes each row on as soon as it is read. The rows are (model spec, chunk)
pairs scored by `runner.ChunkScorer`, as a one-shot `runner.evaluate_specs` scores them, so the numbers are
the same. A chunk whose actor dies is retried by Ray Data; if the pipeline itself fails, the service starts
a new one and submits again every chunk not yet scored. Each chunk's result is kept once (first arrival),
so no request loses or doubles a chunk.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from evals import runner

STOP = None  # what the queue hands the read task to end the pipeline


def _queue_source(queue: Any) -> Any:
    """A Ray Data datasource with one read task yielding one-row blocks from `queue` until STOP."""
    import pyarrow as pa
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class QueueSource(Datasource):
        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            def read() -> Any:
                while (row := queue.get()) is not STOP:
                    yield pa.table({name: [value] for name, value in row.items()})

            return [ReadTask(read, BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None))]

    return QueueSource()


class EvalService:
    """Runs as a named, threaded Ray actor (`start`): trials `submit` a model's chunks and go on training,
    then `collect` the per-chunk results."""

    def __init__(self, load: runner.Load, pool_size: int, cpus_per_actor: float, gpus_per_actor: float,
                 batch_size: int) -> None:
        self.stage = dict(load=load, batch_size=batch_size, pool_size=pool_size, cpus_per_actor=cpus_per_actor,
                          gpus_per_actor=gpus_per_actor)
        self.lock = threading.Condition()
        self.rows: dict[str, dict[str, Any]] = {}        # row key -> row, until it is scored
        self.requests: dict[str, list[Any]] = {}         # request id -> per-chunk results (None: pending)
        self.restarts, self.scored, self.closed = 0, 0, False
        self.queue = None
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, request_id: str, spec: dict[str, Any], chunks: list[dict[str, Any]]) -> None:
        """Queue a model's chunks; returns at once. Submitting a request again is a no-op."""
        key = runner.spec_key(spec)
        with self.lock:
            if request_id in self.requests:
                return
            self.requests[request_id] = [None] * len(chunks)
            rows = [{"key": f"{request_id}\n{i}", "spec": key, "payload": json.dumps([chunk])}  # a row per chunk
                    for i, chunk in enumerate(chunks)]
            self.rows.update({row["key"]: row for row in rows})
            queue = self.queue
        if queue is not None:  # else the pipeline being (re)started picks them up from self.rows
            for row in rows:
                queue.put(row)

    def _complete(self, request_id: str) -> bool:
        """Every chunk of the request scored (call with the lock held)."""
        return all(result is not None for result in self.requests[request_id])

    def ready(self, request_id: str) -> bool:
        with self.lock:
            return self._complete(request_id)

    def collect(self, request_id: str, timeout_s: float | None = None) -> list[list[dict[str, Any]]]:
        """The request's per-chunk results in chunk order, once all are scored (and the request is forgotten)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self.lock:
            while not self._complete(request_id):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"evaluation {request_id} not scored within {timeout_s:g} s")
                self.lock.wait(left)
            return self.requests.pop(request_id)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"chunks_scored": self.scored, "pipeline_restarts": self.restarts, "pending": len(self.rows)}

    def close(self) -> None:
        with self.lock:
            self.closed = True
            queue = self.queue
        if queue is not None:
            queue.put(STOP)

    def _run(self) -> None:
        """Keep a pipeline running until closed; a failed one is replaced, its unscored chunks queued again."""
        while not self.closed:
            try:
                self._pipeline()
            except Exception:  # noqa: BLE001 - any failure of the pipeline: start a new one, lose nothing
                with self.lock:
                    self.restarts += 1
                time.sleep(1.0)

    def _pipeline(self) -> None:
        import ray
        from ray.util.queue import Queue

        context = ray.data.DataContext.get_current()
        context.target_max_block_size = 1  # every row its own block: streamed on as soon as it is read
        context.enable_progress_bars = False
        queue = Queue(actor_options={"num_cpus": 0})
        with self.lock:
            pending = list(self.rows.values())
            self.queue = queue
        for row in pending:
            queue.put(row)
        source = ray.data.read_datasource(_queue_source(queue), num_cpus=0, override_num_blocks=1)
        scored = runner.scorer_stage(source, **self.stage)
        # one block at a time, no prefetch: a prefetching iterator holds each block back until the next one
        # arrives, and the last chunk submitted would wait for work that may never come
        for block in scored.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
            for row in block.to_pylist():
                self._record(str(row["key"]), json.loads(row["result"])[0])

    def _record(self, key: str, result: list[dict[str, Any]]) -> None:
        request_id, index = key.rsplit("\n", 1)
        with self.lock:
            results = self.requests.get(request_id)
            if results is None or results[int(index)] is not None:
                return  # a retried chunk already scored: the first result stands
            results[int(index)] = result
            self.rows.pop(key, None)
            self.scored += 1
            self.lock.notify_all()


def start(name: str, load: runner.Load, pool_size: int, cpus_per_actor: float, gpus_per_actor: float,
          batch_size: int) -> Any:
    """The sweep's service, a named actor trials find with `connect(name)`; it takes no CPU itself."""
    import ray

    return ray.remote(EvalService).options(name=name, num_cpus=0, max_concurrency=256).remote(
        load, pool_size, cpus_per_actor, gpus_per_actor, batch_size)


def connect(name: str) -> Any:
    import ray

    return ray.get_actor(name)


def stop(handle: Any) -> None:
    """End the pipeline, then the actor; best effort (a sweep that fails or is interrupted calls it too)."""
    import ray

    try:
        ray.get(handle.close.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - an actor already gone, or a cluster going down: nothing left to stop
        pass
    ray.kill(handle)
