"""Oracle tests for every shipped task: a perfect reply scores 1 on every test item and a wrong one 0, so a
task whose reference, match rule or data is wrong cannot pass for a hard benchmark. A perfect reply is the
task's own answer (what SFT trains the model to write: for GSM a worked solution ending "#### N"); a wrong
one is another item's answer whose references differ. Multiple-choice items score their gold choice as
gold when it has the highest log-likelihood, and a distractor as a miss. Hub tasks read a local copy in the
hub dataset's format (tests/fixtures/hub) through the same `hf` source; BIG-bench tasks whose file is not
in the cache (PyPI no longer serves the sdist) read hand-written items in BIG-bench's task schema through
the same `bigbench_mc` reader."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from evals import scorers, sources, suites
from bench.lm_eval_bridge import bbh_offline_source

HUB_COPIES = Path(__file__).resolve().parents[1] / "fixtures" / "hub"
BIGBENCH_SCHEMA_COPY = Path(__file__).resolve().parents[1] / "fixtures" / "bigbench" / "task.json"

def _offline(task: suites.Task) -> suites.Task:
    """The task reading its local hub-format copy instead of the hub (the rest of its definition as shipped)."""
    if task.source["kind"] == "bigbench_mc" and not sources.bigbench_path(task.source["task"]).is_file():
        return dataclasses.replace(task, source={**task.source, "task": str(BIGBENCH_SCHEMA_COPY)})
    if task.source["kind"] != "hf":
        return task
    if task.subtasks:  # one local file per subtask
        return dataclasses.replace(task, source=bbh_offline_source())
    source = {k: v for k, v in task.source.items() if k != "name"} | {"path": str(HUB_COPIES / task.name)}
    return dataclasses.replace(task, source=source)


def _test_items(name: str) -> tuple[suites.Task, list[dict]]:
    task = _offline(suites.load_task(name))
    split = "train" if task.source.get("whole_split") == "train" else "test"  # a training set is never scored
    items = suites.select_items(task, split, task.n_items)  # npm data comes with `make test`'s assets step
    assert items, f"{name}: no test items"
    return task, items


def _tasks_scored_by(*scorer_names: str) -> list[str]:
    return [n for n in suites.task_names() if suites.load_task(n).scorer in scorer_names]


def test_every_shipped_task_is_covered_by_an_oracle():
    covered = set(_tasks_scored_by("generate_exact_match", "multiple_choice"))
    covered |= set(_tasks_scored_by("ifeval"))  # its oracle: tests/unit/test_ifeval.py, on the real prompts
    likelihood_only = set(_tasks_scored_by("answer_nll", "text_nll"))  # no reply to be right or wrong
    assert covered | likelihood_only == set(suites.task_names())
    assert {"gsm_symbolic", "arithmetic", "nq_open", "bbh", "math500", "amc23", "aime24",
            "openr1_math"} <= covered


@pytest.mark.parametrize("name", _tasks_scored_by("generate_exact_match"))
def test_a_perfect_reply_scores_1_and_another_items_answer_0(name):
    task, items = _test_items(name)
    accepted = [suites.references(task, it) for it in items]
    perfect = [task.render(task.answer, it) for it in items]
    hits = [scorers.exact_match_item(reply, refs, task.match, task.stop)["hit"] for reply, refs in zip(perfect, accepted)]
    assert hits == [1] * len(items)
    for i, refs in enumerate(accepted):
        wrong = next(perfect[j] for j in range(len(items)) if not set(accepted[j]) & set(refs))
        assert scorers.exact_match_item(wrong, refs, task.match, task.stop)["hit"] == 0


@pytest.mark.parametrize("name", _tasks_scored_by("multiple_choice"))
def test_the_gold_choice_scores_as_gold_and_a_distractor_as_a_miss(name):
    _, items = _test_items(name)
    for item in items:
        choices, gold = item["choices"], item["gold"]
        assert len(set(choices)) == len(choices) >= 2 and 0 <= gold < len(choices)
        best_is = lambda k: [0.0 if c == k else -50.0 for c in range(len(choices))]  # noqa: E731
        right = scorers.choice_record(best_is(gold), choices, gold)
        assert (right["acc"], right["acc_norm"]) == (1, 1) and right["gold_prob"] > 0.999
        miss = scorers.choice_record(best_is((gold + 1) % len(choices)), choices, gold)
        assert (miss["acc"], miss["acc_norm"]) == (0, 0) and miss["gold_prob"] < 1e-3


def test_gsm_symbolic_trains_on_the_solution_and_scores_its_final_number():
    """The bug this file was written for: the worked solution was also the reference, so a correct reply
    (ending "#### 288") was compared with the solution's text and scored 0."""
    task, items = _test_items("gsm_symbolic")
    item = items[0]
    assert task.render(task.answer, item).endswith(f"#### {item['answer']}")
    assert suites.references(task, item) == [item["answer"]]
    assert scorers.exact_match_item(f"So the total is {item['answer']}.", [item["answer"]], task.match)["hit"] == 1


@pytest.mark.parametrize("reply, hit", [
    (" Paris", 1), ("paris.", 1), ("The city of Paris", 1), (" Paris, the capital", 1), ("Paris\nQ: next", 1),
    ("The answer is Paris.", 0),  # lm-eval's exact match: a sentence is not the answer
    ("Lyon", 0), ("", 0),
])
def test_nq_open_matches_any_alias_as_lm_eval_does(reply, hit):
    task, items = _test_items("nq_open")
    item = next(it for it in items if "Paris" in it["answer"])
    assert scorers.exact_match_item(reply, suites.references(task, item), task.match, task.stop)["hit"] == hit


def test_nq_open_verdicts_equal_lm_evals_own_task_on_the_same_replies():
    """lm-eval 0.4.13's nq_open, its filters and metric applied to each reply by lm-eval's own code."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import WhitespaceFilter

    task, items = _test_items("nq_open")
    replies = [" " + it["answer"][-1] + ", I think" for it in items] + [" The " + it["answer"][0] for it in items] \
        + [" " + it["answer"][0].upper() + "!\n" for it in items] + [" not " + it["answer"][0] for it in items]
    for reply, item in zip(replies, items * 4):
        cut = reply
        for stop in ("\n", ".", ","):  # the task's generation_kwargs.until
            cut = cut.split(stop)[0]
        filtered = WhitespaceFilter().apply([[cut]], [item])[0][0]
        theirs = max(exact_match_hf_evaluate([filtered], [gold], regexes_to_ignore=[r"\b(?:The |the |An |A |The |a |an )"],
                                             ignore_case=True, ignore_punctuation=True)["exact_match"] for gold in item["answer"])
        ours = scorers.exact_match_item(reply, suites.references(task, item), task.match, task.stop)["hit"]
        assert ours == int(theirs), (reply, item["answer"])


def test_a_fixed_benchmark_is_scored_on_its_whole_split_and_never_trained_on():
    task, items = _test_items("nq_open")
    assert len(items) == 8  # every row of the copy, no hash bucket
    assert suites.select_items(task, "train", None) == []


MATH_CASES = [  # (reference, reply, the paper's verdict)
    ("\\frac{5}{6}", "so the sum is $\\boxed{\\dfrac{5}{6}}$.", True),
    ("\\frac{1}{2}", "$\\boxed{\\frac{\\frac{1}{2}}{1}}$", True),  # nested braces kept whole
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "$\\boxed{(3,\\frac{\\pi}{2})}$", True),
    ("[2,5)", "the domain is $\\boxed{[2, 5)}$", True),
    ("[2,5)", "the domain is $\\boxed{[2, 5]}$", False),  # an interval's ends count
    ("10", "$\\boxed{10\\text{ cm}}$", True),  # units dropped
    ("\\text{(C)}", "$\\boxed{C}$", True),
    ("0.5", "$\\boxed{\\frac12}$", True),
    ("27.0", "$\\boxed{27}$", True),  # AMC23 stores answers as floats
    ("3", "$\\boxed{4}$", False),
    ("6", "first $\\boxed{5}$, then on reflection $\\boxed{6}$", True),  # the last box is the answer
    ("5", "first $\\boxed{5}$, then on reflection $\\boxed{6}$", False),
    ("3", "the answer is 3", False),  # no box, no answer
    ("3", "$\\boxed{3", False),  # a box never closed
]


@pytest.mark.parametrize("reference, reply, verdict", MATH_CASES)
def test_math_answers_are_the_last_box_by_symbolic_equivalence(reference, reply, verdict):
    assert scorers.reply_matches(reply, reference, "math_verify") is verdict


def test_math_verdicts_equal_math_verifys_own_on_replies_with_one_box():
    """math-verify's parse + verify on the whole reply (its own extraction) against ours (the last box first):
    identical wherever a reply holds one box, including MATH solutions math-verify ships as few-shots."""
    from math_verify import parse, verify
    from math_verify.few_shots import MATH_HARD_FEW_SHOTS

    shipped = [(scorers.last_boxed(s["answer"]), s["answer"]) for s in MATH_HARD_FEW_SHOTS if "\\boxed{" in s["answer"]]
    assert shipped
    cases = [(ref, reply) for ref, reply, _ in MATH_CASES if reply.count("\\boxed{") == 1 and "}$" in reply]
    cases += shipped + [("7", reply) for _, reply in shipped]  # the shipped solutions against a wrong reference
    for reference, reply in cases:
        assert scorers.reply_matches(reply, reference, "math_verify") is verify(parse(f"${reference}$"), parse(reply)), reply


def test_the_papers_training_set_trains_on_every_row_and_rewards_its_ground_truth(tiny_tokenizer):
    """openr1_math as the paper's trainers read it: the worked answer is the SFT target, its boxed answer the
    RL reference; every row trains, none is a test item."""
    task, items = _test_items("openr1_math")
    assert len(items) == 3 and suites.select_items(task, "test", None) == []
    pairs = suites.training_pairs(task, tiny_tokenizer, 10)
    assert len(pairs) == 3 and all(prompt and answer for prompt, answer in pairs)
    reward = suites.verifiable_reward(task)
    for (_, accepted), item in zip(suites.rl_prompts(task, tiny_tokenizer, 10), items):
        assert accepted == [item["reward_model"]["ground_truth"]]
        assert reward(item["extra_info"]["answer"], accepted) == 1.0 and reward("so \\boxed{7}", accepted) == 0.0


def test_the_task_skeleton_init_writes_loads_and_scores_its_own_answers(tmp_path, monkeypatch):
    """`peft-arena init NAME --task TASK`: the user's task beside the config, which trains on and targets
    it, and whose items score a perfect reply 1 and another item's answer 0, like every shipped task."""
    from orchestrator import config

    monkeypatch.chdir(tmp_path)
    target = config.init_config(str(tmp_path / "project" / "mine"), task="capitals")
    cfg = config.load(target)
    assert cfg.train.task == str(tmp_path / "project" / "capitals.yaml") == cfg.eval.target_suite[0]
    task = suites.load_task(cfg.train.task)
    items = suites.select_items(task, "all", task.n_items)
    assert len(items) == len(config.TASK_EXAMPLES)
    perfect = [task.render(task.answer, it) for it in items]
    for i, item in enumerate(items):
        refs = suites.references(task, item)
        assert scorers.exact_match_item(perfect[i], refs, task.match, task.stop)["hit"] == 1
        assert scorers.exact_match_item(perfect[i - 1], refs, task.match, task.stop)["hit"] == 0
