"""Data sources: the Hugging Face `datasets` path users take with a hub, exercised on local files; splits
are disjoint and stable; text answers match after normalisation."""
from __future__ import annotations

import json

import pytest

from evals import scorers, sources, suites


def test_hf_source_on_local_json_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    data = tmp_path / "qa.json"
    data.write_text("\n".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) for i in range(50)))
    task_file = tmp_path / "task.yaml"
    task_file.write_text(f"name: local_hf\nsource: {{kind: hf, path: json, split: train, data_files: {data}, "
                         "fields: {question: q, answer: a}}\nprompt: '{{ question }}'\nscorer: generate_exact_match\n"
                         "metric: exact_match\nn_items: 50\n")
    task = suites.load_task(str(task_file))
    test = sources.load_items(task.source, "test")
    train = sources.load_items(task.source, "train")
    assert test and train and not {t["question"] for t in test} & {t["question"] for t in train}
    assert all(item["answer"] == str(int(item["question"].split()[2]) + 1) for item in test)
    assert len(sources.load_items(task.source, "all")) == 50


def test_hf_source_that_cannot_load_is_a_source_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(sources.SourceError, match="source.path"):
        sources.load_items({"kind": "hf", "path": "json", "data_files": str(tmp_path / "missing.json")}, "test")


def test_reasoning_gym_splits_are_disjoint_and_stable():
    spec = suites.load_task("arithmetic").source
    train, test, val = (sources.load_items(spec, s) for s in ("train", "test", "validation"))
    questions = [{i["question"] for i in part} for part in (train, test, val)]
    assert not questions[0] & questions[1] and not questions[0] & questions[2] and not questions[1] & questions[2]
    assert sources.load_items(spec, "test") == test


@pytest.mark.parametrize("reply,reference,hit", [
    ("True\nbecause", "True", True), ("the Eiffel Tower.", "Eiffel Tower", True), ("Paris, France", "Paris", False),
    ("It is 19.", "19", True), ("12 + 7 = 19", "19", True), ("18", "19", False),
])
def test_reply_matches_numbers_and_text(reply, reference, hit):
    assert scorers.reply_matches(reply, reference) is hit
