"""How sure a score is: paired bootstrap confidence intervals over a suite's items.

A suite score is the mean over tasks of each task's metric, and a task's metric is a statistic of its items
(a mean of 0/1 hits, or exp of a token-weighted mean log-likelihood). Gain and forgetting are differences of
two such scores measured on the *same* items, so their uncertainty is that of a paired difference: each
bootstrap draw resamples a task's items once and scores both models on that draw, independently per task
(a stratified bootstrap), then averages over tasks as the suite does.

Written by hand because `scipy.stats.bootstrap` resamples one set of observations for one statistic: it has
no strata (tasks of different sizes whose metrics are averaged) and no ratio statistics over two per-item
arrays drawn jointly. Everything here is vectorised numpy over (draws x items).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0  # a fixed seed: the same scores always give the same interval
DELTAS = ("gain", "forgetting")  # each comes with `<name>_ci`, its 95% interval (see `delta_intervals`)

Arrays = Mapping[str, np.ndarray]


def _mean_of(field: str) -> Callable[[Arrays], np.ndarray]:
    return lambda a: a[field].mean(axis=-1)


def _ratio_of(numerator: str, denominator: str) -> Callable[[Arrays], np.ndarray]:
    """A ratio of sums over items (lm-eval's instruction-level accuracy: followed / all instructions)."""
    return lambda a: a[numerator].sum(axis=-1) / np.maximum(a[denominator].sum(axis=-1), 1)


def _probability_of_nll(a: Arrays) -> np.ndarray:
    """exp(-token-weighted NLL), a ratio of sums over items: the per-token probability of all their tokens."""
    return np.exp(a["logprob"].sum(axis=-1) / np.maximum(a["tokens"].sum(axis=-1), 1))


# metric -> (the per-item fields it needs, the metric as a function of those fields along the last axis).
# The one definition of every metric: a task's score (`value`) and its bootstrap draws (`task_metric`)
# both compute it here.
STATISTICS: dict[str, tuple[tuple[str, ...], Callable[[Arrays], np.ndarray]]] = {
    "acc": (("acc",), _mean_of("acc")),
    "acc_norm": (("acc_norm",), _mean_of("acc_norm")),
    "gold_prob": (("gold_prob",), _mean_of("gold_prob")),
    "exact_match": (("hit",), _mean_of("hit")),
    "pass_at_k": (("pass",), _mean_of("pass")),
    "answer_token_prob": (("logprob", "tokens"), _probability_of_nll),
    # IFEval: prompts whose every instruction is followed, and followed instructions over all instructions
    "prompt_level_strict_acc": (("strict",), _mean_of("strict")),
    "prompt_level_loose_acc": (("loose",), _mean_of("loose")),
    "inst_level_strict_acc": (("inst_strict", "instructions"), _ratio_of("inst_strict", "instructions")),
    "inst_level_loose_acc": (("inst_loose", "instructions"), _ratio_of("inst_loose", "instructions")),
    "token_prob": (("logprob", "tokens"), _probability_of_nll),
}


def value(metric: str, per_item: Sequence[dict[str, Any]]) -> float:
    """The metric over all of a task's scored items."""
    fields, statistic = STATISTICS[metric]
    return float(statistic({f: np.asarray([it[f] for it in per_item], dtype=float) for f in fields}))


def item_record(metric: str, per_item: Sequence[dict[str, Any]]) -> dict[str, list]:
    """The compact per-item record kept with a task's result: its item ids and the fields its metric needs."""
    fields, _ = STATISTICS[metric]
    return {"id": [it["id"] for it in per_item], **{f: [it[f] for it in per_item] for f in fields}}


def task_metric(task: Mapping[str, Any], draws: np.ndarray | None = None) -> np.ndarray:
    """The task's metric recomputed from its items, on each row of item indices in `draws` (all items once
    when None)."""
    fields, statistic = STATISTICS[task["metric"]]
    arrays = {f: np.asarray(task["items"][f], dtype=float) for f in fields}
    if draws is not None:
        arrays = {f: values[draws] for f, values in arrays.items()}
    return statistic(arrays)


def has_items(suite: Mapping[str, Any]) -> bool:
    return all("items" in task for task in suite["tasks"].values())


def _draws(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


def resampled_scores(results: Sequence[Mapping[str, Any]], resamples: int = RESAMPLES,
                     seed: int = SEED) -> np.ndarray:
    """Each suite result's score on the same bootstrap draws of items, shape (results, resamples): the
    results must be of one suite on the same items (paired item by item through their ids)."""
    rng = np.random.default_rng(seed)
    scores = np.zeros((len(results), resamples))
    first = results[0]
    for name, task in first["tasks"].items():
        for other in results[1:]:
            if name not in other["tasks"] or other["tasks"][name]["items"]["id"] != task["items"]["id"]:
                raise ValueError(f"task {name}: the results were not scored on the same items; they cannot be paired")
        draws = _draws(len(task["items"]["id"]), resamples, rng)
        for i, result in enumerate(results):
            scores[i] += task_metric(result["tasks"][name], draws)
    return scores / len(first["tasks"])


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def paired_difference_ci(finetuned: Mapping[str, Any], base: Mapping[str, Any], resamples: int = RESAMPLES,
                         level: float = LEVEL, seed: int = SEED) -> list[float]:
    """Percentile interval of score(finetuned) - score(base) for two results of the same suite on the same
    items."""
    scores = resampled_scores([finetuned, base], resamples, seed)
    return percentile_interval(scores[0] - scores[1], level)


def delta_intervals(scores: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, list[float]]:
    """95% intervals of gain (target, finetuned - base) and forgetting (retention, base - finetuned), where
    both results kept their items."""
    intervals: dict[str, list[float]] = {}
    if has_items(scores["target"]) and has_items(base["target"]):
        intervals["gain_ci"] = paired_difference_ci(scores["target"], base["target"])
    if has_items(scores["retention"]) and has_items(base["retention"]):
        low, high = paired_difference_ci(scores["retention"], base["retention"])
        intervals["forgetting_ci"] = [-high, -low]
    return intervals


def half_width(interval: Sequence[float]) -> float:
    return (interval[1] - interval[0]) / 2
