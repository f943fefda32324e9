"""Scorers agree with direct, unbatched computations on a tiny model."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from evals import scorers, suites


def aggregate(scorer: str, metric: str, per_item: list[dict]) -> dict:
    """A task's result from its per-item records, as every evaluation path computes it."""
    task = suites.Task(name="t", source={"kind": "jsonl"}, scorer=scorer, metric=metric)
    return suites.aggregate_task(task, [{"id": str(i), **record} for i, record in enumerate(per_item)])


def direct_logprob(model, ids: list[int], n_cont: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n_cont, len(ids)))


def test_batched_continuation_logprobs_equal_unbatched(tiny_model, tiny_tokenizer):
    pairs = [scorers.encode_pair(tiny_tokenizer, c, x) for c, x in
             [("The capital of France is", " Paris"), ("12 + 7 =", " 19"), ("Water boils at", " 100 degrees.")]]
    batched = scorers.continuation_logprobs(tiny_model, tiny_tokenizer, pairs, batch_size=2)
    for (ctx, cont), (score, n) in zip(pairs, batched):
        assert n == len(cont)
        assert score == pytest.approx(direct_logprob(tiny_model, ctx + cont, len(cont)), abs=1e-4)


def test_encode_pair_moves_trailing_space_to_continuation(tiny_tokenizer):
    ctx, cont = scorers.encode_pair(tiny_tokenizer, "Answer: ", "yes")
    whole = tiny_tokenizer("Answer: yes", add_special_tokens=False)["input_ids"]
    assert ctx + cont == whole and ctx == tiny_tokenizer("Answer:", add_special_tokens=False)["input_ids"]


def test_multiple_choice_metrics_match_brute_force(tiny_model, tiny_tokenizer):
    items = [{"context": "Question: What do bees make?\nAnswer:", "choices": ["milk", "honey", "a"], "gold": 1},
             {"context": "Question: Capital of France?\nAnswer:", "choices": ["Paris", "Rome"], "gold": 0},
             {"context": "Question: How many legs?\nAnswer:", "choices": ["six", "eight", "four"], "gold": 2}]
    got = aggregate("multiple_choice", "acc", scorers.multiple_choice_items(tiny_model, tiny_tokenizer, items, batch_size=3))
    acc = acc_norm = gold_prob = gold_logprob = gold_tokens = 0
    for item in items:
        lls = [direct_logprob(tiny_model, sum(scorers.encode_pair(tiny_tokenizer, item["context"], " " + c), []),
                              len(scorers.encode_pair(tiny_tokenizer, item["context"], " " + c)[1]))
               for c in item["choices"]]
        acc += max(range(len(lls)), key=lls.__getitem__) == item["gold"]
        normed = [ll / len(c) for ll, c in zip(lls, item["choices"])]
        acc_norm += max(range(len(normed)), key=normed.__getitem__) == item["gold"]
        gold_prob += math.exp(lls[item["gold"]]) / sum(math.exp(ll) for ll in lls)  # the gold's share of the choices
        gold_logprob += lls[item["gold"]]
        gold_tokens += len(scorers.encode_pair(tiny_tokenizer, item["context"], " " + item["choices"][item["gold"]])[1])
    assert got["acc"] == pytest.approx(acc / 3) and got["acc_norm"] == pytest.approx(acc_norm / 3)
    assert got["gold_prob"] == pytest.approx(gold_prob / 3, rel=1e-5)
    # the gold answers' per-token probability: exp of their log-likelihood over all their tokens
    assert got["answer_token_prob"] == pytest.approx(math.exp(gold_logprob / gold_tokens), rel=1e-5)


def test_text_nll_is_token_weighted_cross_entropy(tiny_model, tiny_tokenizer):
    texts = ["The river runs to the sea.", "Bread is baked in an oven every day."]
    got = aggregate("text_nll", "token_prob", scorers.text_nll_items(tiny_model, tiny_tokenizer, texts, max_tokens=64))
    total, count = 0.0, 0
    for text in texts:
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        total -= direct_logprob(tiny_model, ids, len(ids) - 1)
        count += len(ids) - 1
    assert got["nll"] == pytest.approx(total / count, rel=1e-5)
    assert got["token_prob"] == pytest.approx(math.exp(-total / count), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


@pytest.mark.parametrize("reply,expected", [
    ("The answer is 42.", "42"),
    ("First 3 then 5 so #### 8", "8"),
    ("so \\boxed{-17}", "-17"),
    ("12 + 7 = 19", "19"),
    ("1,234 apples", "1,234"),
    ("no digits here", None),
])
def test_extract_answer(reply, expected):
    assert scorers.extract_answer(reply) == expected


def test_answers_match_numerically():
    assert scorers.answers_match("1,234", "1234")
    assert scorers.answers_match("19.0", "19")
    assert not scorers.answers_match("18", "19")
    assert not scorers.answers_match(None, "19")


def test_generation_is_independent_of_batching(tiny_model, tiny_tokenizer):
    prompts = ["Question: What is 1 + 1?\nAnswer:", "Hi", "The capital of France is Paris and"]
    one_by_one = [scorers.generate(tiny_model, tiny_tokenizer, [p], 5)[0] for p in prompts]
    assert scorers.generate(tiny_model, tiny_tokenizer, prompts, 5, batch_size=3) == one_by_one


def test_shared_context_loglikelihoods_equal_unshared_ones(tiny_model, tiny_tokenizer):
    """Running each context once (KV cache repeated per choice) scores exactly what scoring every
    (context, choice) sequence separately scores."""
    items = [{"context": "Question: What do bees make?\nAnswer:", "choices": ["milk", "honey", "a", "sweet honey"], "gold": 1},
             {"context": "Q: 2+2?\nA:", "choices": ["4", "five"], "gold": 0},
             {"context": "The capital of France is the city of", "choices": ["Paris", "Rome", "Berlin"], "gold": 0}]
    shared = scorers.choice_loglikelihoods(tiny_model, tiny_tokenizer, items, batch_size=2)
    for item, lls in zip(items, shared):
        for choice, ll in zip(item["choices"], lls):
            ctx, cont = scorers.encode_pair(tiny_tokenizer, item["context"], " " + choice)
            assert ll == pytest.approx(direct_logprob(tiny_model, ctx + cont, len(cont)), abs=1e-4)


def test_sampled_replies_depend_on_the_item_seed_alone_and_score_avg_and_pass_at_k(tiny_model, tiny_tokenizer):
    """k samples per item at a temperature: the same records whatever the batch size (each row draws from
    its own seeded generator), `hit` the fraction of the k replies right and `pass` whether any is."""
    items = [{"prompt": f"{a} + {a} =", "references": [str(2 * a)], "seed": 100 + a} for a in range(5)]
    one = scorers.generate_exact_match_items(tiny_model, tiny_tokenizer, items, 6, batch_size=1, samples=4, temperature=1.0)
    many = scorers.generate_exact_match_items(tiny_model, tiny_tokenizer, items, 6, batch_size=16, samples=4, temperature=1.0)
    assert one == many
    replies = scorers.generate(tiny_model, tiny_tokenizer, [it["prompt"] for it in items], 6, samples=4, temperature=1.0,
                               seeds=[it["seed"] for it in items])
    assert len({tuple(replies[i * 4:(i + 1) * 4]) for i in range(5)}) == 5 and len(set(replies)) > 5  # draws differ
    assert scorers.sampled_item(["4", "5", "4", "x"], ["4"]) == {"hit": 0.5, "pass": 1, "reply": "4"}
    assert scorers.sampled_item(["5", "x"], ["4"])["pass"] == 0
    greedy = scorers.generate_exact_match_items(tiny_model, tiny_tokenizer, items, 6)
    assert [r["reply"] for r in greedy] == scorers.generate(tiny_model, tiny_tokenizer, [it["prompt"] for it in items], 6)
    assert all(r["hit"] in (0, 1) and r["pass"] == r["hit"] for r in greedy)


def test_a_reply_ends_at_any_end_token_of_the_models_generation_config(tiny_model, tiny_tokenizer):
    """Qwen2.5-Instruct ends a turn with <|im_end|> and text with <|endoftext|>; its generation config lists
    both, and a reply stops at whichever comes first, as `transformers` generation does."""
    prompt = "1 + 1 ="
    free = scorers.generate_ids(tiny_model, [tiny_tokenizer(prompt)["input_ids"]], 6, 0, None)[0]
    assert len(free) == 6
    tiny_model.generation_config.eos_token_id = [free[2], 10**6]
    assert scorers.end_ids(tiny_model, tiny_tokenizer) == {free[2], 10**6, tiny_tokenizer.eos_token_id}
    stopped = scorers.generate_ids(tiny_model, [tiny_tokenizer(prompt)["input_ids"]], 6, 0,
                                   scorers.end_ids(tiny_model, tiny_tokenizer))[0]
    assert stopped == free[:free.index(free[2]) + 1]  # the end token is kept, nothing after it


def test_a_new_scorer_is_one_entry_and_every_path_scores_with_it(monkeypatch, tmp_path, tiny_model, tiny_tokenizer):
    """A scorer added as one `SCORERS` entry (here: whether the gold choice is the longest) is accepted by
    task YAMLs, scored in chunks, reported with its per-item record and bootstrap interval, and named in
    the dry-run protocol; nothing else is touched."""
    from evals import uncertainty

    monkeypatch.setitem(suites.SCORERS, "gold_is_longest", suites.Scorer(
        metrics=("acc",),
        request=lambda task, tokenizer, item: {"choices": item["choices"], "gold": item["gold"]},
        score=lambda model, tokenizer, requests, params, batch_size: [
            {"acc": int(max(map(len, r["choices"])) == len(r["choices"][r["gold"]]))} for r in requests]))
    fixture = Path(__file__).parents[1] / "fixtures" / "tasks"
    (tmp_path / "longest.yaml").write_text(
        f"name: longest\nsource: {{kind: jsonl, path: {fixture / 'mc_local.jsonl'}}}\n"
        "scorer: gold_is_longest\nmetric: acc\nn_items: 10\n")
    items = suites.select_items(suites.load_task(str(tmp_path / "longest.yaml")), "test", 10)  # its test split
    expected = sum(max(map(len, it["choices"])) == len(it["choices"][it["gold"]]) for it in items) / len(items)

    suite = suites.evaluate_suite(tiny_model, tiny_tokenizer, "target", [str(tmp_path / "longest.yaml")])
    task = suite["tasks"]["longest"]
    assert suite["score"] == task["score"] == pytest.approx(expected) and task["n"] == len(items)
    assert float(uncertainty.task_metric(task)) == task["score"]
    low, high = uncertainty.paired_difference_ci(suite, suite)
    assert low == high == 0.0  # a result paired with itself: the interval machinery accepts the new metric rows
    assert "gold_is_longest acc" in suites.suite_protocol("target", [str(tmp_path / "longest.yaml")])
