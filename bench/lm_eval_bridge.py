"""Run lm-evaluation-harness on exactly our items: our rendered requests (multiple choice, or greedy
generation) are written as a local JSONL dataset plus an lm-eval task YAML, and lm-eval's HFLM scores them.
Used to check that our scorers agree with lm-eval, and by the evaluation benchmark as the baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from evals import suites


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
