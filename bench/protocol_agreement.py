"""Agreement with lm-evaluation-harness 0.4.13 on the paper's General benchmarks, same inputs scored both ways.
BBH (3-shot CoT, all 27 subtasks, on the 81 real items lm-eval ships as exemplars): our prompt vs lm-eval's own
`fewshot_context`, and our verdict vs lm-eval's pipeline on 7 probe replies per item. IFEval (all 541 real
prompts, 3 replies each): our four metrics vs lm-eval's `process_results` aggregated as its task does.
Goal: 100% identical. Written to bench/results/protocol_agreement_{bbh,ifeval}.json.

    python -m bench.protocol_agreement
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

from bench.common import record
from bench.lm_eval_bridge import bbh_offline_source, bbh_probe_replies, bbh_reference_task, bbh_reference_verdict
from evals import ifeval, scorers, suites


def bbh_task() -> tuple[suites.Task, list[dict]]:
    """The bbh task read from the exemplars lm-eval ships (no hub here), and its 81 items."""
    task = dataclasses.replace(suites.load_task("bbh"), source=bbh_offline_source())
    return task, suites.select_items(task, "test", None)


def bbh_prompt_pairs(task: suites.Task, items: list[dict]) -> Iterator[tuple[str, str, str]]:
    """(subtask, our prompt, lm-eval's `fewshot_context`) for each item of lm-eval's own task objects; the
    bench counts the identical ones and the tests assert each, so both compare the same pairs."""
    ours = {(it["subtask"], it["input"]): r["prompt"] for it, r in zip(items, suites.requests(task, None, items))}
    for subtask in task.subtasks:
        reference = bbh_reference_task(subtask)
        for doc in reference.test_docs():
            yield subtask, ours[(subtask, doc["input"])], reference.fewshot_context(doc, 3)


def bbh_verdict_pairs(task: suites.Task, items: list[dict]) -> Iterator[tuple[str, str, bool, bool]]:
    """(subtask, reply, our verdict, lm-eval's) for 7 probe replies per item, one of them carrying the next
    item's answer, so a scorer that accepts any answer is caught."""
    for i, item in enumerate(items):
        for reply in bbh_probe_replies(item, items[(i + 1) % len(items)]["target"]):
            mine = scorers.exact_match_item(reply, suites.references(task, item), task.match, task.stop)["hit"]
            yield item["subtask"], reply, mine, bbh_reference_verdict(item["subtask"], reply, item["target"])


def bbh() -> None:
    task, items = bbh_task()
    prompts = [ours == theirs for _, ours, theirs in bbh_prompt_pairs(task, items)]
    verdicts = [ours == theirs for _, _, ours, theirs in bbh_verdict_pairs(task, items)]
    record("protocol_agreement_bbh", "identical prompts and verdicts / all (higher is better)",
           sum(prompts) + sum(verdicts), len(prompts) + len(verdicts), "100% identical to lm-eval's bbh_cot_fewshot",
           all(prompts) and all(verdicts), prompts=len(prompts), identical_prompts=sum(prompts),
           verdicts=len(verdicts), identical_verdicts=sum(verdicts), subtasks=len(task.subtasks))


def ifeval_comparison() -> tuple[dict[str, float], dict[str, float], int]:
    """Our four IFEval metrics and lm-eval's, over 3 replies to each of the 541 prompts (the prompt echoed,
    a lowercase echo without commas, an empty reply), and the number of replies."""
    verifiers = ifeval.lm_eval_verifiers()
    process_results, agg_inst_level_acc = verifiers.process_results, verifiers.agg_inst_level_acc
    task = suites.load_task("ifeval")
    items = suites.select_items(task, "test", None)
    replies = [(it, r) for it in items for r in (it["prompt"], it["prompt"].lower().replace(",", ""), "")]
    ours = suites.aggregate_task(task, [{"id": str(i), **ifeval.check(r, it)} for i, (it, r) in enumerate(replies)])
    theirs = []
    for item, reply in replies:
        random.seed(item["key"])  # the letter lm-eval draws for "!" and "#" letter counts: the same draw
        theirs.append(process_results(item, [reply]))
    reference = {"prompt_level_strict_acc": sum(t["prompt_level_strict_acc"] for t in theirs) / len(theirs),
                 "prompt_level_loose_acc": sum(t["prompt_level_loose_acc"] for t in theirs) / len(theirs),
                 "inst_level_strict_acc": agg_inst_level_acc([t["inst_level_strict_acc"] for t in theirs]),
                 "inst_level_loose_acc": agg_inst_level_acc([t["inst_level_loose_acc"] for t in theirs])}
    return {k: ours[k] for k in reference}, reference, len(replies)


def ifeval_metrics() -> None:
    ours, reference, replies = ifeval_comparison()
    same = sum(abs(ours[k] - v) < 1e-12 for k, v in reference.items())
    record("protocol_agreement_ifeval", "metrics identical to lm-eval's / all (higher is better)", same,
           len(reference), "100% identical to lm-eval's ifeval", same == len(reference), replies=replies,
           metrics_ours=ours, metrics_lm_eval=reference, punkt=ifeval.use_punkt())


if __name__ == "__main__":
    bbh()
    ifeval_metrics()
