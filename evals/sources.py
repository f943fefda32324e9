"""Where task data comes from, offline first.

Sources: reasoning-gym generators (seeded), BIG-bench task.json files and SQuAD-shifts Wikipedia
paragraphs extracted from the `bigbench` sdist into the cache (by `peft-arena assets`, or before a run
starts: orchestrator.trials.assets; the sdist is never pip-installed, it pulls TensorFlow), local JSONL files, and
Hugging Face `datasets`. Every source returns plain dicts; splits are deterministic and disjoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test", "all")
# Ten hash buckets: 0-1 test, 2-3 validation, the rest train. Disjoint by construction and stable across
# machines and library versions (unlike seeds, which overlap in reasoning-gym).
_BUCKETS = {"test": {0, 1}, "validation": {2, 3}, "train": set(range(4, 10))}


class SourceError(ValueError):
    """Task data that cannot be found or read; the message names the field and what is allowed."""


def cache_dir() -> Path:
    """Root of everything the project caches (converted models, extracted data, base-model scores)."""
    root = Path(os.environ.get("PEFT_ARENA_CACHE", Path.home() / ".cache" / "peft-arena"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def split_of(key: str) -> str:
    bucket = stable_hash(key) % 10
    return next(name for name, buckets in _BUCKETS.items() if bucket in buckets)


def select_split(items: list[dict[str, Any]], keys: list[str], split: str) -> list[dict[str, Any]]:
    if split not in SPLITS:
        raise SourceError(f"split: {split!r} is not a split; allowed: {', '.join(SPLITS)}")
    if split == "all":
        return items
    return [item for item, key in zip(items, keys) if split_of(key) == split]


# ---------------------------------------------------------------------------------------------- sources


def reasoning_gym_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Generated items split by template id where the generator has templates (gsm_symbolic), else by
    question text, and de-duplicated by question so no test question is ever trained on."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(spec["dataset"], size=spec.get("size", 2000),
                                           seed=spec.get("seed", 0), **spec.get("args", {}))
    templates = getattr(dataset, "task_indices", None)
    items, keys, seen = [], [], set()
    for i in range(len(dataset)):
        entry = dataset[i]
        if entry["question"] in seen:
            continue
        seen.add(entry["question"])
        item = {"question": entry["question"], "answer": str(entry["answer"])}
        if "answer_cot" in entry.get("metadata", {}):
            item["answer_cot"] = entry["metadata"]["answer_cot"]
        items.append(item)
        keys.append(f"template:{templates[i]}" if templates is not None else entry["question"])
    return select_split(items, keys, split)


def bigbench_mc_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    task = bigbench_task(spec["task"])
    items = []
    for example in task["examples"]:
        scores = example.get("target_scores")
        if not scores:
            continue
        choices = list(scores)
        items.append({"input": example["input"].strip(), "choices": choices,
                      "gold": max(range(len(choices)), key=lambda c: scores[choices[c]]),
                      "prefix": task.get("task_prefix") or ""})
    return select_split(items, [it["input"] for it in items], split)


def squad_paragraph_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    data = bigbench_task(spec["file"])
    items = [{"text": para["context"].strip()}
             for article in data["data"] for para in article["paragraphs"]]
    return select_split(items, [it["text"] for it in items], split)


def jsonl_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    path = Path(spec["path"]).expanduser()
    if not path.is_file():
        raise SourceError(f"source.path: {str(path)!r} does not exist; allowed: a JSONL file")
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SourceError(f"source.path: {path}:{line_no} is not JSON ({err.msg})") from None
    key_field = spec.get("key", next(iter(items[0]), "")) if items else ""
    return select_split(items, [json.dumps(it.get(key_field, it), sort_keys=True) for it in items], split)


def hf_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Any `datasets.load_dataset` source: a hub id (needs network) or a local builder with data_files
    (e.g. path: json). `fields` renames dataset columns to the names the task's template uses. The
    dataset's own split is `spec['split']`; our train/validation/test buckets are then taken by hash,
    unless `whole_split` names the one split that gets every row: `test` for a fixed benchmark (never
    trained on), `train` for a training set (never scored)."""
    import datasets

    kwargs = {k: spec[k] for k in ("name", "data_files") if k in spec}
    try:
        rows = datasets.load_dataset(spec["path"], split=spec.get("split", "test"), **kwargs)
    except Exception as err:  # noqa: BLE001 - offline hub, missing file, bad id: one line for the user
        raise SourceError(f"source.path: {spec['path']!r} could not be loaded ({str(err).splitlines()[0][:160]})") from None
    fields = spec.get("fields", {})
    items = [{**row, **{new: row[old] for new, old in fields.items()}} for row in rows]
    whole = spec.get("whole_split")
    if whole is not None:
        if whole not in ("train", "test"):
            raise SourceError(f"source.whole_split: {whole!r}; allowed: train, test")
        return items if split in (whole, "all") else []
    return select_split(items, [json.dumps(it, sort_keys=True, default=str) for it in items], split)


SOURCES = {
    "hf": hf_items,
    "reasoning_gym": reasoning_gym_items,
    "bigbench_mc": bigbench_mc_items,
    "squad_paragraphs": squad_paragraph_items,
    "jsonl": jsonl_items,
}


def load_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    kind = spec.get("kind")
    if kind not in SOURCES:
        raise SourceError(f"source.kind: unknown source {kind!r}; allowed: {', '.join(SOURCES)}")
    return SOURCES[kind](spec, split)


# ----------------------------------------------------------------------------------- bigbench files


def bigbench_files(spec: dict[str, Any]) -> list[str]:
    """The files (paths inside the sdist's benchmark_tasks/) a source reads, for the asset fetcher."""
    if spec.get("kind") not in ("bigbench_mc", "squad_paragraphs"):
        return []
    return [spec[k] for k in ("task", "file") if k in spec]


def bigbench_path(rel: str) -> Path:
    return cache_dir() / "bigbench" / rel


def bigbench_task(rel: str) -> dict[str, Any]:
    path = bigbench_path(rel)
    if not path.is_file():
        raise SourceError(f"source: BIG-bench file {rel!r} is not in the cache ({path.parent}); "
                          "run `peft-arena assets` to fetch it")
    return json.loads(path.read_text(encoding="utf-8"))
