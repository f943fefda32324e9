"""BBH as the paper and lm-evaluation-harness 0.4.13 score it: all 27 subtasks, 3-shot chain of thought. On real
BBH items (the exemplars lm-eval ships), our prompt equals the one lm-eval's own task object builds, item for
item, and our verdict on a reply equals lm-eval's pipeline read from its task definition (its stop strings,
its regex filter, its metric), reply for reply."""
from __future__ import annotations

import json
import re

import pytest

from evals import fewshot, scorers, suites
from bench.protocol_agreement import bbh_prompt_pairs, bbh_task, bbh_verdict_pairs


@pytest.fixture(scope="module")
def bbh():
    return bbh_task()


def test_every_subtask_of_lm_evals_group_is_scored(bbh):
    task, items = bbh
    group = fewshot.lm_eval_definition("bbh/cot_fewshot/_bbh_cot_fewshot.yaml")["task"]
    assert sorted(f"bbh_cot_fewshot_{name}" for name in task.subtasks) == sorted(group)
    assert len(items) == 81 and {it["subtask"] for it in items} == set(task.subtasks)


def test_prompts_equal_lm_evals_fewshot_context(bbh):
    checked = 0
    for subtask, ours, theirs in bbh_prompt_pairs(*bbh):
        assert ours == theirs, subtask
        checked += 1
    assert checked == 81


def test_verdicts_equal_lm_evals_on_the_same_replies(bbh):
    task, items = bbh
    hits = 0
    for subtask, reply, ours, theirs in bbh_verdict_pairs(task, items):
        assert ours == theirs, (subtask, reply[-80:])
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
