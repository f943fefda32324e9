"""Scoring a model on the target and retention suites: in this process or sharded over a Ray Data actor
pool, the base model's scores cached, and gain / forgetting as differences to them."""
from __future__ import annotations

import functools
import json
from typing import Any

from torch import nn

from evals import runner, suites, uncertainty
from evals.sources import cache_dir
from orchestrator import checkpoints, models
from orchestrator.config import EvalConfig, ModelConfig
from orchestrator.files import atomic_write_json


def evaluate(model: nn.Module, tokenizer: Any, cfg: EvalConfig, split: str | None = None) -> dict[str, Any]:
    """Target and retention suites on `split` (default: the config's)."""
    return {kind: suites.evaluate_suite(model, tokenizer, kind, getattr(cfg, f"{kind}_suite"), split or cfg.split,
                                        cfg.max_items, cfg.batch_size)
            for kind in suites.SUITE_KINDS}


_BASE_FORMAT = "items"  # cached scores from before per-item records are not reused: they could not be paired


def base_scores(model: nn.Module, tokenizer: Any, model_cfg: ModelConfig, cfg: EvalConfig) -> dict[str, Any]:
    """The unmodified base model's scores, cached per (weights, suite definition + items, split)."""
    scores = {}
    for kind in suites.SUITE_KINDS:
        suite = getattr(cfg, f"{kind}_suite")
        key = "-".join([models.fingerprint(model_cfg), kind, cfg.split, _BASE_FORMAT,
                        suites.suite_fingerprint(kind, suite, cfg.split, cfg.max_items)])
        path = cache_dir() / "base_scores" / f"{key}.json"
        if path.is_file():
            scores[kind] = json.loads(path.read_text())
            continue
        scores[kind] = suites.evaluate_suite(model, tokenizer, kind, suite, cfg.split, cfg.max_items,
                                             cfg.batch_size)
        atomic_write_json(path, scores[kind])
    return scores


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
    loader = functools.partial(checkpoints.load_for_eval, spec)
    return runner.evaluate(loader, tokenizer, {kind: suite}, split, max_items, pool_size=pool)[kind]
