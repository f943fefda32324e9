"""Scoring a model on the target and retention suites: in this process or sharded over a Ray Data actor
pool, the base model's scores cached, and gain / forgetting as differences to them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from evals import runner, service, suites, uncertainty
from evals.sources import cache_dir
from orchestrator.config import ConfigError, EvalConfig, ModelConfig, digest
from orchestrator.files import atomic_write_json
from orchestrator.process import rank_and_world, rank_zeros
from orchestrator.trials import checkpoints, models


def evaluate(model: nn.Module, tokenizer: Any, cfg: EvalConfig, split: str | None = None) -> dict[str, Any]:
    """Target and retention suites on `split` (default: the config's). In a data-parallel trial every rank
    calls it and scores its share of the chunks (`runner.evaluate_on_ranks`): the same numbers as one
    process, and no rank idles while another scores."""
    return runner.evaluate_on_ranks(model, tokenizer, cfg.suite_refs(), split or cfg.split, cfg.max_items,
                                    cfg.batch_size)


_BASE_FORMAT = "items"  # cached scores from before per-item records are not reused: they could not be paired


def base_scores(model: nn.Module, tokenizer: Any, model_cfg: ModelConfig, cfg: EvalConfig) -> dict[str, Any]:
    """The unmodified base model's scores, cached per (weights, suite definition + items, split). Every rank
    of a data-parallel trial calls it: rank 0 reads the cache and the ranks score what it lacks together;
    rank 0 writes it."""
    refs = cfg.suite_refs()
    paths = {kind: _base_cache_path(model_cfg, cfg, kind, ref) for kind, ref in refs.items()}
    cached = rank_zeros({kind: json.loads(path.read_text()) for kind, path in paths.items() if path.is_file()})
    missing = {kind: ref for kind, ref in refs.items() if kind not in cached}
    scored = runner.evaluate_on_ranks(model, tokenizer, missing, cfg.split, cfg.max_items, cfg.batch_size) if missing else {}
    if rank_and_world()[0] == 0:
        for kind, scores in scored.items():
            atomic_write_json(paths[kind], scores)
    return {kind: (cached | scored)[kind] for kind in refs}


def _base_cache_path(model_cfg: ModelConfig, cfg: EvalConfig, kind: str, ref: suites.SuiteRef) -> Path:
    key = "-".join([models.fingerprint(model_cfg), kind, cfg.split, _BASE_FORMAT,
                    suites.suite_fingerprint(kind, ref, cfg.split, cfg.max_items)])
    return cache_dir() / "base_scores" / f"{key}.json"


def take_replies(scores: dict[str, Any]) -> list[dict[str, Any]]:
    """Every reply of a {kind: suite result}, one row each (kind, task, item id, reply), taken out of it: a
    paper-scale checkpoint generates thousands of replies of up to 8192 tokens, too many for a result
    JSON rewritten at every checkpoint, so they go to a file of their own (`TrialDir.write_replies`)."""
    rows = []
    for kind, suite in scores.items():
        for task, scored in suite["tasks"].items():
            for item, reply in zip(scored["items"]["id"], scored.pop("replies", [])):
                rows.append({"kind": kind, "task": task, "id": item, "reply": reply})
    return rows


def deltas(scores: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """gain = target(ft) - target(base); forgetting = retention(base) - retention(ft) (positive = lost); each
    with its paired-bootstrap 95% interval (`gain_ci`, `forgetting_ci`)."""
    return {"gain": scores["target"]["score"] - base["target"]["score"],
            "forgetting": base["retention"]["score"] - scores["retention"]["score"],
            **uncertainty.delta_intervals(scores, base)}


def score_spec(spec: dict[str, Any], kind: str, suite: suites.SuiteRef, split: str, max_items: int | None,
               pool: int = 0) -> dict[str, Any]:
    """One suite's scores of a model spec (base, checkpoint or path point, see `checkpoints.load_for_eval`):
    in this process, or on `pool` Ray Data actors that each load the model once (identical numbers)."""
    for name in suites.suite_task_names(kind, suite):  # a typo fails before any model loads
        suites.load_task(name)
    if not pool:
        model, tokenizer = checkpoints.load_for_eval(spec)
        return suites.evaluate_suite(model, tokenizer, kind, suite, split, max_items)
    tokenizer = models.load_tokenizer(checkpoints.base_model(spec))
    return runner.evaluate_specs(checkpoints.load_for_eval, tokenizer, [spec], {kind: suite}, split, max_items,
                                 pool_size=pool)[0][kind]


def service_name(output_dir: str) -> str:
    """The sweep's evaluation service (a named Ray actor) as its trials find it: one per sweep dir."""
    return f"peft-arena-eval-{digest(output_dir)[:12]}"


SERVICE_START_S = 300  # actors placed, imports done, the base model loaded; beyond it the pool cannot be placed


def start_service(output_dir: str, cfg: EvalConfig, model: ModelConfig, timeout_s: float | None = None) -> Any:
    """The sweep's evaluation service, up and scoring before any trial starts: its actors take their share
    of the cluster first (trials that took it all would wait forever on their scores), and a pool that
    cannot be placed is a config error, not a hang at the end of every trial."""
    import ray

    timeout_s = timeout_s or SERVICE_START_S
    handle = service.start(service_name(output_dir), checkpoints.load_for_eval, cfg.pool_size, cfg.cpus_per_actor,
                           cfg.gpus_per_actor, cfg.batch_size)
    chunk = runner.render(models.load_tokenizer(model), {"target": cfg.target_suite}, cfg.split, 1).chunks[:1]
    try:
        ray.get(handle.submit.remote("warm-up", {"model": model.model_dump()}, chunk))
        ray.get(handle.collect.remote("warm-up", timeout_s))
    except ray.exceptions.RayTaskError as err:
        service.stop(handle)
        if not isinstance(err.as_instanceof_cause(), TimeoutError):
            raise
        raise ConfigError(f"eval.pool_size: {cfg.pool_size} actor(s) x {cfg.cpus_per_actor:g} CPU / "
                          f"{cfg.gpus_per_actor:g} GPU did not start within {timeout_s:g} s on a cluster of "
                          f"{_cluster_summary()}; allowed: a pool the cluster can place") from None
    return handle


def _cluster_summary() -> str:
    import ray

    total = ray.cluster_resources()
    return f"{total.get('CPU', 0):g} CPU / {total.get('GPU', 0):g} GPU"


class HandOff:
    """A trial's checkpoints scored by the sweep's evaluation service (`eval.mode: pool`): each is handed
    off as it is saved and training goes on; the scores come back in checkpoint order."""

    def __init__(self, output_dir: str, tokenizer: Any, cfg: EvalConfig, request_prefix: str) -> None:
        self.service = service.connect(service_name(output_dir))
        refs = cfg.suite_refs()
        self.rendered = runner.render(tokenizer, refs, cfg.split, cfg.max_items)  # the same for every checkpoint
        self.prefix = request_prefix
        self.pending: list[tuple[int, Path, str]] = []

    def submit(self, step: int, directory: Path) -> None:
        import ray

        request = f"{self.prefix}/{step}"
        ray.get(self.service.submit.remote(request, {"checkpoint": str(directory)}, self.rendered.chunks))
        self.pending.append((step, directory, request))

    def scored(self, wait: bool) -> Iterator[tuple[int, Path, dict[str, Any]]]:
        """(step, checkpoint, scores) of the handed-off checkpoints in order: those already scored, or with
        `wait` every one."""
        import ray

        while self.pending:
            step, directory, request = self.pending[0]
            if not wait and not ray.get(self.service.ready.remote(request)):
                return
            results = ray.get(self.service.collect.remote(request))
            self.pending.pop(0)
            yield step, directory, runner.assemble(self.rendered, results)
