"""Run lm-evaluation-harness on exactly our items: our rendered requests (multiple choice, or greedy
generation) are written as a local JSONL dataset plus an lm-eval task YAML, and lm-eval's HFLM scores them.
Used to check that our scorers agree with lm-eval, and by the evaluation benchmark as the baseline. Also a
local copy of BBH made of the real items lm-eval ships (its exemplars), for agreement checks offline."""
from __future__ import annotations

import functools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from evals import fewshot, suites


def write_task(task: suites.Task, tokenizer: Any, directory: Path, split: str = "test",
               max_items: int | None = None) -> str:
    """An lm-eval task over the same items, prompt and choices; returns its task name."""
    items = [r for chunk in suites.task_chunks(task, tokenizer, split, max_items) for r in chunk["requests"]]
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{task.name}.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    name = f"arena_{task.name}"
    spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "metadata": {"version": 1.0}}
    if task.scorer == "multiple_choice":
        spec |= {"output_type": "multiple_choice", "doc_to_text": "{{context}}", "doc_to_target": "{{gold}}",
                 "doc_to_choice": "{{choices}}", "target_delimiter": " ",
                 "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                 {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    elif task.scorer == "generate_exact_match":  # greedy, as many new tokens as we generate, stop at EOS
        spec |= {"output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{references[0]}}",
                 "target_delimiter": "", "generation_kwargs": {"until": [tokenizer.eos_token], "do_sample": False,
                                                               "max_gen_toks": task.max_new_tokens},
                 "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    else:
        raise ValueError(f"task {task.name}: multiple-choice and generation tasks are bridged, not {task.scorer}")
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return name


def evaluate(model: Any, tokenizer: Any, task_names: list[str], directory: Path, batch_size: int = 16) -> dict[str, dict]:
    """{task name: {"acc": .., "acc_norm": ..}} from lm-eval's own HFLM backend, zero-shot."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=task_names, num_fewshot=0, task_manager=TaskManager(include_path=str(directory)),
                                  bootstrap_iters=0, log_samples=False, random_seed=0)
    return {name: {"acc": out["results"][name]["acc,none"], "acc_norm": out["results"][name]["acc_norm,none"]}
            for name in task_names}


def generate(model: Any, tokenizer: Any, task_name: str, directory: Path, batch_size: int = 16) -> list[str]:
    """lm-eval's greedy replies (HFLM `generate_until`), in the task's item order."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=[task_name], num_fewshot=0, bootstrap_iters=0, log_samples=True,
                                  task_manager=TaskManager(include_path=str(directory)), random_seed=0)
    samples = sorted(out["samples"][task_name], key=lambda s: s["doc_id"])
    return [s["resps"][0][0] for s in samples]


@functools.lru_cache(maxsize=None)
def bbh_exemplar_copy() -> Path:
    """A local copy of BBH in the hub dataset's format (one JSONL per subtask: input, target), made of real
    BBH items: the three worked exemplars lm-eval ships per subtask, each target its exemplar's final answer."""
    root = Path(tempfile.mkdtemp(prefix="bbh-copy-"))
    for subtask in suites.load_task("bbh").subtasks:
        definition = fewshot.lm_eval_definition(f"bbh/cot_fewshot/{subtask}.yaml")
        rows = [{"input": ex["input"], "target": re.search(r"the answer is (.*)\.$", ex["target"]).group(1)}
                for ex in definition["fewshot_config"]["samples"]]
        (root / f"{subtask}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def bbh_offline_source() -> dict:
    """bbh's source pointed at `bbh_exemplar_copy` through the same `hf` loader (a local json builder)."""
    return {"kind": "hf", "path": "json", "data_files": str(bbh_exemplar_copy() / "{subtask}.jsonl"),
            "split": "train", "whole_split": "test"}


def bbh_reference_task(subtask: str):
    """lm-eval's own task object for the subtask, over the same local items."""
    from lm_eval.api.task import ConfigurableTask

    config = {**fewshot.lm_eval_definition(f"bbh/cot_fewshot/{subtask}.yaml"), "dataset_path": "json",
              "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(bbh_exemplar_copy() / f"{subtask}.jsonl")}}}
    return ConfigurableTask(config=config)


def bbh_reference_verdict(subtask: str, reply: str, target: str) -> int:
    """lm-eval's pipeline for one reply, every setting read from the subtask's definition: cut at each
    `until` string, the filter list's regex (first match), then the task's exact_match metric."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    definition = fewshot.lm_eval_definition(f"bbh/cot_fewshot/{subtask}.yaml")
    for stop in definition["generation_kwargs"]["until"]:
        reply = reply.split(stop)[0]
    steps = definition["filter_list"][0]["filter"]
    if [s["function"] for s in steps] != ["regex", "take_first"]:
        raise ValueError(f"{subtask}: lm-eval's filters are now {steps}; this reference reads regex + take_first")
    answer = RegexFilter(regex_pattern=steps[0]["regex_pattern"]).apply([[reply]], [{}])[0][0]
    options = {k: v for k, v in definition["metric_list"][0].items() if k not in ("metric", "aggregation", "higher_is_better")}
    return int(exact_match_hf_evaluate([answer], [target], **options)["exact_match"])


def bbh_probe_replies(item: dict, other_target: str) -> list[str]:
    """Replies that exercise the answer filter on one BBH item: its exemplar's own worked answer, the same
    with another item's answer, one that runs on past a blank line, no closing period (lm-eval's regex drops
    the last character), a capitalised "The answer is", an empty reply, a parenthesised answer."""
    worked = {ex["input"]: ex["target"] for ex in
              fewshot.lm_eval_definition(f"bbh/cot_fewshot/{item['subtask']}.yaml")["fewshot_config"]["samples"]}
    chain, target = worked[item["input"]], item["target"]
    return [chain, chain.replace(f"the answer is {target}.", f"the answer is {other_target}."),
            chain + "\n\nQ: the next question. So the answer is nothing.", f"So the answer is {target}",
            f"So The answer is {target}.", "", f"the answer is ({target})."]
