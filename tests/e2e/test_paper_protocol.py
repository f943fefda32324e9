"""The paper config end to end, offline: `peft-arena run paper-qwen2.5-7b-sft` trains on OpenR1-Math and scores
MATH-500, AMC23, AIME24 (target) and IFEval, BBH, NQ-open (retention) through the paper's own task
definitions, with only what needs the hub changed: the packaged SmolLM2-135M for Qwen2.5-7B, local copies in
each hub dataset's format for the hub sources, and a few items and tokens per task for the whole splits
(Huang et al., "PEFT-Arena", arXiv 2605.28819, Sec. 4). Every task is scored, and each recorded verdict is
what the task's scorer gives the recorded reply."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.lm_eval_bridge import bbh_offline_source
from evals import ifeval, scorers, suites

ROOT = Path(__file__).resolve().parents[2]
HUB_COPIES = ROOT / "tests" / "fixtures" / "hub"
TARGET, RETENTION = ("math500", "amc23", "aime24"), ("ifeval", "bbh", "nq_open")
# What a CPU affords per task: the protocol's fields (prompt, chat template, few-shot, stop strings, match
# rule, sampling) stay; only the amount shrinks.
SMALL = {"max_new_tokens": 24, "samples": 2}


def _offline_task(name: str, folder: Path) -> Path:
    """A task YAML that inherits the shipped one and reads its local hub-format copy."""
    task = suites.load_task(name)
    fields: dict = {"base": str(suites.TASK_DIR / f"{name}.yaml"), "max_new_tokens": SMALL["max_new_tokens"]}
    if task.samples > 1:
        fields["samples"] = SMALL["samples"]
    if task.subtasks:
        fields["source"] = bbh_offline_source()
    elif task.source["kind"] == "hf":
        fields["source"] = {k: v for k, v in task.source.items() if k != "name"} | {"path": str(HUB_COPIES / name)}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields), encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_paper_sft_config_scores_every_paper_task_offline(tmp_path):
    tasks = {name: _offline_task(name, tmp_path) for name in TARGET + RETENTION + ("openr1_math",)}
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "paper-qwen2.5-7b-sft", "--method", "lora", "--setting", "r=2",
         "--set", "model={name: smollm2-135m, dtype: float32, target_modules: all-linear}",
         "--set", f"train.task={tasks['openr1_math']}", "--set", "train.train_items=8", "--set", "train.steps=2",
         "--set", "train.batch_size=2", "--set", "train.grad_accum=1", "--set", "train.max_length=256",
         "--set", "train.checkpoint_every=2", "--set", "train.zero_stage=0",
         "--set", f"eval.target_suite=[{', '.join(str(tasks[n]) for n in TARGET)}]",
         "--set", f"eval.retention_suite=[{', '.join(str(tasks[n]) for n in RETENTION)}]",
         "--set", "eval.max_items=2", "--set", "eval.batch_size=2", "--set", "tracking.enabled=false",
         "--set", f"output_dir={out}/{{name}}"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (trial_dir,) = (out / "paper-qwen2.5-7b-sft" / "trials").iterdir()
    result = json.loads((trial_dir / "result.json").read_text())
    assert result["status"] == "completed" and [c["step"] for c in result["checkpoints"]] == [2]
    for kind, names in (("target", TARGET), ("retention", RETENTION)):
        for scores in (result["base"][kind], result["checkpoints"][-1][kind]):
            assert sorted(scores["tasks"]) == sorted(names), kind
            for name in names:
                _check_recorded_verdicts(suites.load_task(str(tasks[name])), scores["tasks"][name])


def _check_recorded_verdicts(task: suites.Task, scored: dict) -> None:
    """The task's scorer, run here on the replies the trial recorded, gives the verdicts it recorded. A
    sampled task records its first sample's reply and the mean over its samples: its verdicts are means."""
    items = {suites.item_id(it): it for it in suites.select_items(task, "test", 2)}
    recorded = scored["items"]
    assert scored["n"] == len(items) == 2 and sorted(recorded["id"]) == sorted(items), task.name
    assert 0.0 <= scored["score"] <= 1.0, task.name
    fields = [f for f in recorded if f != "id"]
    for row, (item_id, reply) in enumerate(zip(recorded["id"], scored["examples"])):
        item = items[item_id]
        if task.samples > 1:
            assert recorded["hit"][row] in {k / task.samples for k in range(task.samples + 1)}, task.name
            continue
        verdict = (ifeval.check(reply, item) if task.scorer == "ifeval" else
                   scorers.exact_match_item(reply, suites.references(task, item), task.match, task.stop))
        assert {f: verdict[f] for f in fields} == {f: recorded[f][row] for f in fields}, (task.name, reply)
