"""BBH as the paper and lm-evaluation-harness 0.4.13 score it: all 27 subtasks, 3-shot chain of thought. On real
BBH items (the exemplars lm-eval ships), our prompt equals the one lm-eval's own task object builds, item for
item, and our verdict on a reply equals lm-eval's pipeline read from its task definition (its stop strings,
its regex filter, its metric), reply for reply."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from evals import fewshot, scorers, suites
from tests.helpers import bbh_exemplar_copy, bbh_offline_source


@pytest.fixture(scope="module")
def bbh():
    task = dataclasses.replace(suites.load_task("bbh"), source=bbh_offline_source())
    return task, suites.select_items(task, "test", None)


def _lm_eval_task(subtask: str):
    """lm-eval's own task object for the subtask, over the same local items."""
    from lm_eval.api.task import ConfigurableTask

    config = {**fewshot.lm_eval_definition(f"bbh/cot_fewshot/{subtask}.yaml"), "dataset_path": "json",
              "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(bbh_exemplar_copy() / f"{subtask}.jsonl")}}}
    return ConfigurableTask(config=config)


def test_every_subtask_of_lm_evals_group_is_scored(bbh):
    task, items = bbh
    group = fewshot.lm_eval_definition("bbh/cot_fewshot/_bbh_cot_fewshot.yaml")["task"]
    assert sorted(f"bbh_cot_fewshot_{name}" for name in task.subtasks) == sorted(group)
    assert len(items) == 81 and {it["subtask"] for it in items} == set(task.subtasks)


def test_prompts_equal_lm_evals_fewshot_context(bbh):
    task, items = bbh
    ours = {(it["subtask"], it["input"]): request["prompt"] for it, request in zip(items, suites.requests(task, None, items))}
    checked = 0
    for subtask in task.subtasks:
        reference = _lm_eval_task(subtask)
        for doc in reference.test_docs():
            assert ours[(subtask, doc["input"])] == reference.fewshot_context(doc, 3), subtask
            checked += 1
    assert checked == 81


def _lm_eval_verdict(subtask: str, reply: str, target: str) -> int:
    """lm-eval's pipeline for one reply, every setting read from the subtask's definition: cut at each
    `until` string, the filter list's regex (first match), then the task's exact_match metric."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    definition = fewshot.lm_eval_definition(f"bbh/cot_fewshot/{subtask}.yaml")
    for stop in definition["generation_kwargs"]["until"]:
        reply = reply.split(stop)[0]
    steps = definition["filter_list"][0]["filter"]
    assert [s["function"] for s in steps] == ["regex", "take_first"]
    answer = RegexFilter(regex_pattern=steps[0]["regex_pattern"]).apply([[reply]], [{}])[0][0]
    options = {k: v for k, v in definition["metric_list"][0].items() if k not in ("metric", "aggregation", "higher_is_better")}
    return int(exact_match_hf_evaluate([answer], [target], **options)["exact_match"])


def test_verdicts_equal_lm_evals_on_the_same_replies(bbh):
    task, items = bbh
    worked = {ex["input"]: ex["target"] for name in task.subtasks
              for ex in fewshot.lm_eval_definition(f"bbh/cot_fewshot/{name}.yaml")["fewshot_config"]["samples"]}
    hits = 0
    for i, item in enumerate(items):
        other = items[(i + 1) % len(items)]["target"]
        chain = worked[item["input"]]
        replies = [chain,  # the exemplar's own worked answer
                   chain.replace(f"the answer is {item['target']}.", f"the answer is {other}."),
                   chain + "\n\nQ: the next question. So the answer is nothing.",  # runs on: cut at the blank line
                   f"So the answer is {item['target']}",  # no closing period: lm-eval's regex drops the last character
                   f"So The answer is {item['target']}.", "", f"the answer is ({item['target']})."]
        for reply in replies:
            ours = scorers.exact_match_item(reply, suites.references(task, item), task.match, task.stop)["hit"]
            assert ours == _lm_eval_verdict(item["subtask"], reply, item["target"]), (item["subtask"], reply[-80:])
            hits += ours
    assert hits >= 2 * len(items)  # the worked answer and the run-on one at least; the rest mostly miss


def test_the_answer_filter_is_lm_evals():
    template = fewshot.lm_eval_definition("bbh/cot_fewshot/_cot_fewshot_template_yaml")
    assert template["filter_list"][0]["filter"][0]["regex_pattern"] == scorers.BBH_COT_ANSWER
    assert suites.load_task("bbh").stop == tuple(template["generation_kwargs"]["until"])


def test_the_result_shows_each_subtask(bbh):
    task, items = bbh
    per_item = [{"id": suites.item_id(it), "subtask": it["subtask"], "reply": "",
                 "hit": float(it["subtask"] == "navigate"), "pass": 0} for it in items]
    result = suites.aggregate_task(task, per_item)
    assert result["subtasks"]["navigate"] == 1 and result["subtasks"]["snarks"] == 0
    assert len(result["subtasks"]) == 27 and result["score"] == pytest.approx(3 / 81)


def test_dry_run_states_the_protocol():
    line = suites.protocol(suites.load_task("bbh"))
    assert line.startswith("bbh (the whole test split of each of 27 subtasks (up to 6511), 3-shot from lm-eval's "
                           "bbh/cot_fewshot/{subtask}.yaml, greedy, up to 512 new tokens, match lm_eval_bbh_cot")


@pytest.mark.parametrize("fields, error", [
    ({"subtasks": "navigate"}, r"^task bbh.subtasks: 'navigate'; allowed: a list of non-empty strings$"),
    ({"subtasks": ["navigate", "no_such_subtask"]},
     r"^task bbh.fewshot.lm_eval: 'bbh/cot_fewshot/no_such_subtask.yaml' is not a task of the installed lm-eval"),
    ({"fewshot": {"lm_eval": "bbh/cot_fewshot/{subtask}.yaml", "n": 3}}, r"^task bbh.fewshot: .*allowed: \{lm_eval: "),
])
def test_bad_subtask_fields_are_one_line(tmp_path, fields, error):
    path = tmp_path / "bbh_mine.yaml"
    path.write_text(json.dumps({"base": str(suites.TASK_DIR / "bbh.yaml"), **fields}), encoding="utf-8")
    with pytest.raises(suites.TaskError, match=error) as raised:
        suites.load_task(str(path))
    assert "\n" not in str(raised.value) and re.search("bbh", str(raised.value))
