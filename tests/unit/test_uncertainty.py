"""Paired bootstrap intervals of gain and forgetting: they cover the truth as often as they claim, they are
computed from the same per-item numbers the scores are, and they refuse to pair different items."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evals import suites, uncertainty
from orchestrator.trials import scoring

pytestmark = pytest.mark.unit


def _task(metric: str, per_item: list[dict]) -> dict:
    return {"score": uncertainty.value(metric, per_item), "metric": metric,
            "items": uncertainty.item_record(metric, per_item)}


def _suite(tasks: dict[str, dict]) -> dict:
    return {"score": sum(t["score"] for t in tasks.values()) / len(tasks), "tasks": tasks}


def _binary_pair(rng: np.random.Generator, n: int, p_base: float, keep: float) -> tuple[list[dict], list[dict]]:
    """Items a base model gets right with p_base; the finetuned model keeps each answer with prob. `keep`
    and flips it otherwise, so the two are correlated item by item as real checkpoints are."""
    base = rng.random(n) < p_base
    tuned = np.where(rng.random(n) < keep, base, ~base)
    ids = [f"{i:04d}" for i in range(n)]
    return ([{"id": i, "hit": int(b), "pass": int(b), "reply": ""} for i, b in zip(ids, base)],
            [{"id": i, "hit": int(t), "pass": int(t), "reply": ""} for i, t in zip(ids, tuned)])


def test_the_95_percent_interval_of_a_paired_difference_covers_the_truth_93_to_97_percent_of_the_time():
    """400 simulated evaluations of a two-task suite (200 and 120 items, different true differences); the
    suite difference's true value is the mean of the tasks' population differences."""
    rng = np.random.default_rng(7)
    specs = {"a": (200, 0.6, 0.8), "b": (120, 0.3, 0.8)}  # n, p_base, keep: true differences -0.04, +0.08
    truth = sum(p * keep + (1 - p) * (1 - keep) - p for _, p, keep in specs.values()) / len(specs)
    assert truth == pytest.approx(0.02)
    covered = 0
    for _ in range(400):
        pairs = {name: _binary_pair(rng, *spec) for name, spec in specs.items()}
        base = _suite({name: _task("exact_match", b) for name, (b, _) in pairs.items()})
        tuned = _suite({name: _task("exact_match", t) for name, (_, t) in pairs.items()})
        low, high = uncertainty.paired_difference_ci(tuned, base, resamples=1000)
        covered += low <= truth <= high
    assert 0.93 <= covered / 400 <= 0.97, covered  # 381 of 400 (0.9525) when written


def test_pairing_narrows_the_interval_of_correlated_scores():
    """Scored on the same items, a finetuned model that changes 5% of its answers has a far narrower
    interval of its difference than two independent samples of the same accuracy would give."""
    rng = np.random.default_rng(1)
    base_items, tuned_items = _binary_pair(rng, 400, 0.5, 0.95)
    base, tuned = _suite({"t": _task("exact_match", base_items)}), _suite({"t": _task("exact_match", tuned_items)})
    width = uncertainty.half_width(uncertainty.paired_difference_ci(tuned, base))
    unpaired = 1.96 * math.sqrt(2 * 0.25 / 400)  # normal half-width of a difference of two independent means
    assert width < unpaired / 2


@pytest.mark.parametrize("scorer,metric", [(scorer, metric) for scorer, entry in suites.SCORERS.items()
                                           for metric in entry.metrics])
def test_every_metric_is_its_formula_and_its_bootstrap_recomputes_it_from_the_items(scorer, metric):
    """A task's reported score is the metric's textbook formula over its items (a mean of per-item
    values, or the per-token probability exp(sum log p / sum tokens)), and the interval's statistic,
    recomputed from the kept item record, is that same number."""
    rng = np.random.default_rng(3)
    per_item = [{"id": str(i), "acc": int(rng.random() < 0.4), "acc_norm": int(rng.random() < 0.5),
                 "gold_prob": float(rng.random()),
                 "hit": int(rng.random() < 0.3), "pass": int(rng.random() < 0.6), "reply": "", "logprob": float(-rng.random() * 20),
                 "tokens": int(rng.integers(1, 30)), "instructions": int(rng.integers(1, 4))} for i in range(57)]
    for it in per_item:  # IFEval: instructions followed of the item's 1-3, and whether all are
        it["inst_strict"], it["inst_loose"] = int(rng.integers(0, it["instructions"] + 1)), it["instructions"]
        it["strict"], it["loose"] = int(it["inst_strict"] == it["instructions"]), 1
    field = {"exact_match": "hit", "pass_at_k": "pass", "prompt_level_strict_acc": "strict",
             "prompt_level_loose_acc": "loose"}.get(metric, metric)
    if metric.endswith("token_prob"):
        expected = math.exp(sum(it["logprob"] for it in per_item) / sum(it["tokens"] for it in per_item))
    elif metric.startswith("inst_level_"):  # followed instructions over all instructions
        followed = "inst_strict" if "strict" in metric else "inst_loose"
        expected = sum(it[followed] for it in per_item) / sum(it["instructions"] for it in per_item)
    else:
        expected = sum(it[field] for it in per_item) / len(per_item)
    task = suites.aggregate_task(suites.Task(name="t", source={"kind": "jsonl"}, scorer=scorer, metric=metric), per_item)
    assert task["score"] == task[metric] == pytest.approx(expected, rel=1e-12)
    assert float(uncertainty.task_metric(task)) == task["score"]


def test_a_difference_between_identical_results_has_a_zero_width_interval():
    rng = np.random.default_rng(2)
    items, _ = _binary_pair(rng, 50, 0.5, 1.0)
    suite = _suite({"t": _task("exact_match", items)})
    assert uncertainty.paired_difference_ci(suite, suite) == [0.0, 0.0]


def test_gain_and_forgetting_carry_intervals_that_contain_their_point_estimates():
    rng = np.random.default_rng(4)
    target_base, target_tuned = _binary_pair(rng, 80, 0.2, 0.7)
    retention_base, retention_tuned = _binary_pair(rng, 120, 0.6, 0.9)
    base = {"target": _suite({"t": _task("exact_match", target_base)}),
            "retention": _suite({"r": _task("exact_match", retention_base)})}
    tuned = {"target": _suite({"t": _task("exact_match", target_tuned)}),
             "retention": _suite({"r": _task("exact_match", retention_tuned)})}
    out = scoring.deltas(tuned, base)
    assert out["gain_ci"][0] <= out["gain"] <= out["gain_ci"][1]
    assert out["forgetting_ci"][0] <= out["forgetting"] <= out["forgetting_ci"][1]
    assert out == scoring.deltas(tuned, base)  # a fixed seed: the same scores give the same interval


def test_results_scored_on_different_items_are_not_paired():
    rng = np.random.default_rng(5)
    items, _ = _binary_pair(rng, 30, 0.5, 1.0)
    other = [dict(it, id=f"x{it['id']}") for it in items]
    with pytest.raises(ValueError, match="task t: the results were not scored on the same items"):
        uncertainty.paired_difference_ci(_suite({"t": _task("exact_match", items)}),
                                         _suite({"t": _task("exact_match", other)}))


def test_item_ids_are_stable_content_hashes():
    item = {"question": "2 + 2?", "answer": "4"}
    assert suites.item_id(item) == suites.item_id(dict(reversed(list(item.items()))))
    assert len(suites.item_id(item)) == 16
