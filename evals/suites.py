"""Tasks (YAML data) and named suites (target, retention) that aggregate them into one score each.

A task names a data source, a prompt template (sandboxed Jinja over an item: templates cannot run code),
a scorer and the metric that is its primary score. Every primary score is in [0, 1], higher is better,
so a suite score is the unweighted mean of its tasks' scores, as the paper averages its benchmarks.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from torch import nn

from evals import fewshot, ifeval, scorers, sources, uncertainty

TASK_DIR = Path(__file__).parent / "tasks"
SUITES_FILE = Path(__file__).parent / "suites.yaml"
SUITE_KINDS = ("target", "retention")

_REQUIRED = ("name", "source", "scorer", "metric")
_ALLOWED = set(_REQUIRED) | {"base", "_dir", "prompt", "answer", "reference", "aliases", "match", "stop", "chat",
                             "samples", "temperature", "n_items", "max_new_tokens", "max_tokens", "subtasks", "fewshot"}
# A template's trailing newline is kept, as lm-eval renders its templates ("A: Let's think step by step.\n").
_JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
SUBTASK = "{subtask}"  # in a source's strings and a few-shot path: replaced by each subtask's name


class TaskError(ValueError):
    """A task or suite definition that is missing, malformed or names something unknown."""


@dataclass(frozen=True)
class Task:
    name: str
    source: dict[str, Any]
    scorer: str
    metric: str
    prompt: str = "{{ question }}"
    # what SFT trains on and a perfect reply writes (a worked solution ending "#### 18", say)
    answer: str = "{{ answer }}"
    # what a reply is scored against (the final "18"); unset: the answer itself
    reference: str | None = None
    # an item field listing every accepted reference (NQ-open's aliases): a reply matching any one is a hit
    aliases: str | None = None
    match: str = "auto"  # scorers.MATCH_RULES, or auto: final number for numeric references, else first line
    stop: tuple[str, ...] = ()  # a reply ends at its first stop string (lm-eval's `until`)
    samples: int = 1  # replies per item: exact_match is then avg@k, pass_at_k pass@k
    temperature: float = 0.0  # 0: greedy; sampling needs > 0 (the paper's math: 16 samples at 0.6)
    chat: bool = False
    # one task over several datasets (BBH's 27): each subtask's items come from the source with SUBTASK
    # replaced by its name, carry it as `subtask`, and are scored together (the item mean, as lm-eval's
    # group with weight_by_size); the result shows each subtask's score too
    subtasks: tuple[str, ...] = ()
    fewshot: dict[str, str] | None = None  # {lm_eval: a task YAML under lm_eval/tasks/}: its exemplars lead the prompt
    n_items: int = 40
    max_new_tokens: int = 16
    max_tokens: int = 128
    definition: dict[str, Any] = field(default_factory=dict, compare=False)

    def render(self, template: str, item: dict[str, Any]) -> str:
        try:
            return _JINJA.from_string(template).render(**item)
        except TemplateError as err:
            raise TaskError(f"task {self.name}: template {template!r} failed: {err}") from None


def task_names() -> list[str]:
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def is_task_path(ref: Any) -> bool:
    """A task reference that names a YAML file (relative to what names it), not a task or suite name."""
    return isinstance(ref, str) and ref.endswith((".yaml", ".yml"))


def _read_task_yaml(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not (is_task_path(name_or_path) and path.is_file()):
        path = TASK_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TaskError(f"task: unknown task {name_or_path!r}; allowed: {', '.join(task_names())} "
                        "or a path to a task YAML")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TaskError(f"task {path.name}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TaskError(f"task {path.name}: must be a mapping of fields")
    data["_dir"] = str(path.parent)
    if "base" in data:  # inherit every field of another task, override what this one sets
        base = data["base"]
        if is_task_path(base):  # a path is relative to this YAML
            base = str(path.parent / Path(base).expanduser())
        data = {**_read_task_yaml(base), **{k: v for k, v in data.items() if k != "base"}}
    return data


def load_task(name_or_path: str) -> Task:
    data = _read_task_yaml(name_or_path)
    label = data.get("name", name_or_path)
    for key in _REQUIRED:
        if key not in data:
            raise TaskError(f"task {label}: missing field {key!r}; required: {', '.join(_REQUIRED)}")
    unknown = sorted(set(data) - _ALLOWED)
    if unknown:
        raise TaskError(f"task {label}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(_ALLOWED))}")
    if data["scorer"] not in SCORERS:
        raise TaskError(f"task {label}.scorer: unknown scorer {data['scorer']!r}; "
                        f"allowed: {', '.join(SCORERS)}")
    if data["metric"] not in SCORERS[data["scorer"]].metrics:
        raise TaskError(f"task {label}.metric: {data['metric']!r} is not produced by {data['scorer']}; "
                        f"allowed: {', '.join(SCORERS[data['scorer']].metrics)}")
    if not isinstance(data["source"], dict) or data["source"].get("kind") not in sources.SOURCES:
        raise TaskError(f"task {label}.source.kind: allowed: {', '.join(sources.SOURCES)}")
    _check_reference_fields(label, data)
    _check_templates(label, data)
    _check_subtasks(label, data)
    fields = {k: v for k, v in data.items() if k not in ("base", "_dir")}
    for key in ("stop", "subtasks"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if fields["source"]["kind"] == "jsonl" and "_dir" in data:  # data files sit next to their task YAML
        fields["source"] = {**fields["source"], "path": str(Path(data["_dir"]) / fields["source"]["path"])}
    return Task(**fields, definition=fields)


def _check_reference_fields(label: str, data: dict[str, Any]) -> None:
    """The scoring fields' types, checked when the task loads rather than when its first reply is scored."""
    match = data.get("match", "auto")
    if match != "auto" and match not in scorers.MATCH_RULES:
        raise TaskError(f"task {label}.match: unknown rule {match!r}; allowed: auto, {', '.join(scorers.MATCH_RULES)}")
    stop = data.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise TaskError(f"task {label}.stop: {stop!r}; allowed: a list of non-empty strings")
    samples, temperature = data.get("samples", 1), data.get("temperature", 0.0)
    if not (isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1):
        raise TaskError(f"task {label}.samples: {samples!r}; allowed: an integer >= 1")
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature >= 0):
        raise TaskError(f"task {label}.temperature: {temperature!r}; allowed: a number >= 0")
    if samples > 1 and temperature == 0:
        raise TaskError(f"task {label}.samples: {samples} greedy replies would be identical; "
                        "allowed: 1, or set temperature > 0")
    for key in ("reference", "aliases"):
        if key in data and not isinstance(data[key], str):
            raise TaskError(f"task {label}.{key}: {data[key]!r}; allowed: a string")
    if "reference" in data and "aliases" in data:
        raise TaskError(f"task {label}: set reference or aliases, not both")


def _check_subtasks(label: str, data: dict[str, Any]) -> None:
    """Subtask names, and every subtask's few-shot definition read once, when the task loads."""
    subtasks = data.get("subtasks", [])
    if not isinstance(subtasks, list) or not all(isinstance(s, str) and s for s in subtasks):
        raise TaskError(f"task {label}.subtasks: {subtasks!r}; allowed: a list of non-empty strings")
    shots = data.get("fewshot")
    if shots is None:
        return
    if not (isinstance(shots, dict) and set(shots) == {"lm_eval"} and isinstance(shots["lm_eval"], str)):
        raise TaskError(f"task {label}.fewshot: {shots!r}; allowed: {{lm_eval: a task YAML under lm_eval/tasks/}}")
    for name in subtasks or [None]:
        try:
            fewshot.lm_eval_definition(_for_subtask(shots["lm_eval"], name))
        except fewshot.FewshotError as err:
            raise TaskError(f"task {label}.{err}") from None


def _for_subtask(value: Any, subtask: str | None) -> Any:
    """`value` (a source spec, a path) with SUBTASK replaced in every string."""
    if subtask is None:
        return value
    if isinstance(value, str):
        return value.replace(SUBTASK, subtask)
    if isinstance(value, dict):
        return {k: _for_subtask(v, subtask) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_subtask(v, subtask) for v in value]
    return value


class _AnyField:
    """Stands for any item field when a template is checked without data: every attribute, key and
    element is another, so what fails is what no item could fix (bad syntax, what the sandbox refuses)."""

    def __getattr__(self, name: str) -> "_AnyField":
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: Any) -> "_AnyField":
        return self

    def __iter__(self):  # noqa: ANN204 - one element, itself
        return iter([self])

    def __str__(self) -> str:
        return "x"


def _check_templates(label: str, data: dict[str, Any]) -> None:
    """Every template of the task compiled and rendered once on a stand-in item, when the task loads: a
    template the sandbox refuses (reaching for `__class__`, say) is a config error now, not a failure in
    the first trial's scoring after training. Errors a stand-in cannot tell from data (a filter that
    needs a number) are left to the real items."""
    for key in ("prompt", "answer", "reference"):
        template = data.get(key)
        if not isinstance(template, str):
            continue
        try:
            names = meta.find_undeclared_variables(_JINJA.parse(template))
            _JINJA.from_string(template).render(**{name: _AnyField() for name in names})
        except TemplateError as err:
            raise TaskError(f"task {label}.{key}: {template!r} cannot render ({err})") from None
        except (TypeError, ValueError):
            continue


SuiteRef = str | list[str]  # a named suite, a single task, or an ad-hoc list of task names / YAML paths


def suite_label(name: SuiteRef) -> str:
    return name if isinstance(name, str) else "+".join(Path(n).stem for n in name)


def suite_task_names(kind: str, name: SuiteRef) -> list[str]:
    suites = yaml.safe_load(SUITES_FILE.read_text(encoding="utf-8"))
    if kind not in SUITE_KINDS:
        raise TaskError(f"suite kind: {kind!r}; allowed: {', '.join(SUITE_KINDS)}")
    if isinstance(name, list):
        if not name:
            raise TaskError(f"eval.{kind}_suite: an empty list of tasks")
        return list(name)
    if name in suites[kind]:
        return list(suites[kind][name])
    if name in task_names() or Path(name).is_file():  # a single task is a suite of one
        return [name]
    raise TaskError(f"eval.{kind}_suite: unknown suite {name!r}; allowed: {', '.join(suites[kind])} "
                    "or a task name")


def protocol(task: Task) -> str:
    """How a task is scored, in one phrase (what a sweep's --dry-run prints for each suite task)."""
    whole = task.source.get("whole_split")
    split = f"the whole {task.source['split']} split" if "split" in task.source else "every item"
    items = f"{split} (up to {task.n_items})" if whole == "test" else f"{task.n_items} items"
    if task.subtasks:
        items = items.replace(" split (up to", f" split of each of {len(task.subtasks)} subtasks (up to")
    if task.fewshot is not None:
        shots = fewshot.lm_eval_definition(_for_subtask(task.fewshot["lm_eval"], (task.subtasks or (None,))[0]))
        items += f", {shots.get('num_fewshot', 0)}-shot from lm-eval's {task.fewshot['lm_eval']}"
    if not SCORERS[task.scorer].generates:
        return f"{task.name} ({items}, {task.scorer} {task.metric})"
    drawn = "greedy" if task.temperature == 0 else f"{task.samples} samples at temperature {task.temperature:g}"
    judged = f"match {task.match}" if task.scorer == "generate_exact_match" else f"{task.scorer} verifiers"
    return f"{task.name} ({items}, {drawn}, up to {task.max_new_tokens} new tokens, {judged}, {task.metric})"


def suite_protocol(kind: str, name: SuiteRef) -> str:
    return f"{kind} suite {suite_label(name)}: " + "; ".join(protocol(load_task(t)) for t in suite_task_names(kind, name))


# ------------------------------------------------------------------------------------------ requests


def chat_prompt(tokenizer: Any, text: str) -> str:
    """The user turn wrapped in the tokenizer's chat template, ending where the assistant starts."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


def _uses_chat_template(task: Task, tokenizer: Any) -> bool:
    return task.chat and bool(getattr(tokenizer, "chat_template", None))


def _prompt(task: Task, tokenizer: Any, item: dict[str, Any]) -> str:
    """The question after the task's few-shot exemplars, if any. Chat tasks use the tokenizer's template;
    a tokenizer without one gets a plain Q/A frame."""
    text = fewshot_context(task, item.get("subtask")) + task.render(task.prompt, item)
    if _uses_chat_template(task, tokenizer):
        return chat_prompt(tokenizer, text)
    return f"Question: {text}\nAnswer:" if task.chat else text


def fewshot_context(task: Task, subtask: str | None) -> str:
    if task.fewshot is None:
        return ""
    return fewshot.context(fewshot.lm_eval_definition(_for_subtask(task.fewshot["lm_eval"], subtask)), task.render)


def item_id(item: dict[str, Any]) -> str:
    """An item's stable id (a hash of its content): base and finetuned scores pair item by item through it."""
    return f"{sources.stable_hash(json.dumps(item, sort_keys=True)):016x}"


def select_items(task: Task, split: str, limit: int | None) -> list[dict[str, Any]]:
    """A deterministic, shuffled-by-hash subset: the same items on every machine and every pool size."""
    if task.subtasks:
        items = [{**it, "subtask": name} for name in task.subtasks
                 for it in sources.load_items(_for_subtask(task.source, name), split)]
    else:
        items = sources.load_items(task.source, split)
    items.sort(key=item_id)
    return items[:limit]


def answer_continuation(task: Task, tokenizer: Any, item: dict[str, Any]) -> str:
    """The reference answer followed by end-of-sequence: the model must learn to stop, too."""
    space = "" if _uses_chat_template(task, tokenizer) else " "
    return space + task.render(task.answer, item) + (tokenizer.eos_token or "")


def references(task: Task, item: dict[str, Any]) -> list[str]:
    """Every reference a reply to this item may match: the item's aliases, or the one rendered reference."""
    if task.aliases is None:
        return [task.render(task.reference or task.answer, item)]
    accepted = item.get(task.aliases)
    if not (isinstance(accepted, list) and accepted and all(isinstance(a, str) for a in accepted)):
        raise TaskError(f"task {task.name}.aliases: item field {task.aliases!r} is {accepted!r}; "
                        "allowed: a non-empty list of strings")
    return accepted


def requests(task: Task, tokenizer: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [SCORERS[task.scorer].request(task, tokenizer, it) for it in items]


def training_pairs(task: Task, tokenizer: Any, n_items: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) from the task's *train* split: the SFT data for this target task."""
    items = select_items(task, "train", n_items)
    if not items:
        raise TaskError(f"task {task.name}: the train split is empty")
    return [scorers.encode_pair(tokenizer, _prompt(task, tokenizer, it), answer_continuation(task, tokenizer, it))
            for it in items]


def rl_prompts(task: Task, tokenizer: Any, n_items: int) -> list[tuple[list[int], list[str]]]:
    """(prompt ids, accepted references) from the task's *train* split: what RL with verifiable rewards
    samples completions for and scores against, by the task's own match rule (`verifiable_reward`)."""
    items = select_items(task, "train", n_items)
    if not items:
        raise TaskError(f"task {task.name}: the train split is empty")
    return [(tokenizer(_prompt(task, tokenizer, it), add_special_tokens=False)["input_ids"], references(task, it))
            for it in items]


def verifiable_reward(task: Task) -> Callable[[str, list[str]], float]:
    """The GRPO reward of a target task: 1 for a completion its exact-match scorer counts as a hit, else 0."""
    return lambda completion, accepted: float(
        scorers.exact_match_item(completion, accepted, task.match, task.stop)["hit"])


# ------------------------------------------------------------------------------------------- scoring

# A task's requests are scored in fixed chunks of this many items. Local and sharded (Ray Data) runs use
# the same chunks, and a chunk is always scored whole by one model, so batch composition - and with it
# every float - is the same whatever the pool size.
CHUNK_ITEMS = 32

@dataclass(frozen=True)
class Scorer:
    """Everything about one scorer a task can name, so that a new scorer is one entry of `SCORERS`: how an
    item becomes a request (plain data, sent to evaluation actors), how a chunk of requests is scored into
    per-item records (`evals.scorers`), the metrics it offers as a task's primary score (each one defined
    once, in `uncertainty.STATISTICS`, for the score and its bootstrap interval alike), and what else a
    task's result shows beside them."""
    metrics: tuple[str, ...]
    request: Callable[[Task, Any, dict[str, Any]], dict[str, Any]]
    score: Callable[[nn.Module, Any, list[dict[str, Any]], dict[str, Any], int], list[dict[str, Any]]]
    extras: Callable[[list[dict[str, Any]], dict[str, float]], dict[str, Any]] = lambda per_item, metrics: {}
    generates: bool = False  # replies are generated (and then matched), not scored by likelihood


def _generation_request(task: Task, tokenizer: Any, item: dict[str, Any]) -> dict[str, Any]:
    subtask = {"subtask": item["subtask"]} if "subtask" in item else {}
    return {"prompt": _prompt(task, tokenizer, item), "references": references(task, item),
            "seed": int(item_id(item), 16) % 2**31, **subtask}


def _generation_extras(per_item: list[dict[str, Any]], metrics: dict[str, float]) -> dict[str, Any]:
    """Every reply (in the order of `items`' ids; a sampled item's first sample), the first few again as
    `examples` for tables, and each subtask's exact match where the task has subtasks. Whoever keeps a
    result decides where the replies go (a trial files them beside its result: `scoring.take_replies`)."""
    by_subtask: dict[str, list[float]] = {}
    for record in per_item:
        if "subtask" in record:
            by_subtask.setdefault(record["subtask"], []).append(record["hit"])
    subtasks = {"subtasks": {name: sum(hits) / len(hits) for name, hits in sorted(by_subtask.items())}} if by_subtask else {}
    return {"examples": [it["reply"] for it in per_item[:3]], "replies": [it["reply"] for it in per_item], **subtasks}


def _nll_extras(probability: str) -> Callable[[list[dict[str, Any]], dict[str, float]], dict[str, Any]]:
    """The mean NLL in nats (and perplexity, token count) beside a per-token probability metric."""
    def extras(per_item: list[dict[str, Any]], metrics: dict[str, float]) -> dict[str, Any]:
        nll = -math.log(metrics[probability])
        return {"nll": nll, "perplexity": math.exp(nll), "tokens": sum(it["tokens"] for it in per_item)}
    return extras


SCORERS: dict[str, Scorer] = {
    "generate_exact_match": Scorer(  # with samples > 1: exact_match is avg@k, pass_at_k pass@k
        metrics=("exact_match", "pass_at_k"), request=_generation_request, generates=True,
        score=lambda m, t, r, p, bs: scorers.generate_exact_match_items(
            m, t, r, p["max_new_tokens"], bs, p["match"], p["stop"], p["samples"], p["temperature"]),
        extras=_generation_extras),
    "ifeval": Scorer(  # lm-eval's IFEval verifiers (evals.ifeval); the paper's General uses inst_level_strict_acc
        metrics=("inst_level_strict_acc", "prompt_level_strict_acc", "inst_level_loose_acc", "prompt_level_loose_acc"),
        request=lambda task, tokenizer, it: {"prompt": _prompt(task, tokenizer, it), "doc": {
            k: it[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}},
        score=lambda m, t, r, p, bs: ifeval.ifeval_items(m, t, r, p["max_new_tokens"], bs), generates=True,
        extras=_generation_extras),
    "answer_nll": Scorer(
        metrics=("answer_token_prob",), extras=_nll_extras("answer_token_prob"),
        request=lambda task, tokenizer, it: {"prompt": _prompt(task, tokenizer, it),
                                             "answer": answer_continuation(task, tokenizer, it)},
        score=lambda m, t, r, p, bs: scorers.answer_nll_items(m, t, r, bs)),
    "multiple_choice": Scorer(
        metrics=("acc", "acc_norm", "gold_prob", "answer_token_prob"),
        request=lambda task, tokenizer, it: {"context": task.render(task.prompt, it), "choices": it["choices"],
                                             "gold": it["gold"]},
        score=lambda m, t, r, p, bs: scorers.multiple_choice_items(m, t, r, bs)),
    "text_nll": Scorer(
        metrics=("token_prob",), extras=_nll_extras("token_prob"),
        request=lambda task, tokenizer, it: {"text": it["text"]},
        score=lambda m, t, r, p, bs: scorers.text_nll_items(m, t, [x["text"] for x in r], p["max_tokens"], bs)),
}


def task_chunks(task: Task, tokenizer: Any, split: str = "test", max_items: int | None = None) -> list[dict[str, Any]]:
    """The task's rendered requests, cut into fixed chunks (plain data: they travel to Ray actors)."""
    limit = min(task.n_items, max_items) if max_items else task.n_items
    items = select_items(task, split, limit)
    reqs, ids = requests(task, tokenizer, items), [item_id(it) for it in items]
    if not reqs:
        raise TaskError(f"task {task.name}: no items in split {split!r}")
    params = {"max_new_tokens": task.max_new_tokens, "max_tokens": task.max_tokens, "match": task.match,
              "stop": list(task.stop), "samples": task.samples, "temperature": float(task.temperature)}
    return [{"task": task.name, "chunk": i // CHUNK_ITEMS, "scorer": task.scorer, "params": params,
             "requests": reqs[i:i + CHUNK_ITEMS], "ids": ids[i:i + CHUNK_ITEMS]} for i in range(0, len(reqs), CHUNK_ITEMS)]


def score_chunk(model: nn.Module, tokenizer: Any, chunk: dict[str, Any], batch_size: int = 16) -> list[dict[str, Any]]:
    """Per-item results of one chunk (in eval mode, without gradients), each with its item's id."""
    was_training = model.training
    model.eval()
    try:
        scored = SCORERS[chunk["scorer"]].score(model, tokenizer, chunk["requests"], chunk["params"], batch_size)
    finally:
        model.train(was_training)
    return [{"id": item, **result} for item, result in zip(chunk["ids"], scored)]


def aggregate_task(task: Task, per_item: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's metrics, and its per-item record (ids + what the metric needs) for paired intervals."""
    scorer = SCORERS[task.scorer]
    metrics = {name: uncertainty.value(name, per_item) for name in scorer.metrics}
    return {"score": metrics[task.metric], "metric": task.metric, **metrics, "n": len(per_item),
            **scorer.extras(per_item, metrics), "items": uncertainty.item_record(task.metric, per_item)}


def aggregate_suite(name: SuiteRef, tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"suite": suite_label(name), "score": sum(r["score"] for r in tasks.values()) / len(tasks), "tasks": tasks}


def score_task(model: nn.Module, tokenizer: Any, task: Task, split: str = "test",
               max_items: int | None = None, batch_size: int = 16) -> dict[str, Any]:
    per_item = [r for chunk in task_chunks(task, tokenizer, split, max_items)
                for r in score_chunk(model, tokenizer, chunk, batch_size)]
    return aggregate_task(task, per_item)


def evaluate_suite(model: nn.Module, tokenizer: Any, kind: str, name: SuiteRef, split: str = "test",
                   max_items: int | None = None, batch_size: int = 16) -> dict[str, Any]:
    """In-process evaluation (a trial scoring its own checkpoints). `evals.runner` shards the same
    chunks over a Ray Data actor pool and aggregates them identically."""
    loaded = [load_task(t) for t in suite_task_names(kind, name)]
    return aggregate_suite(name, {task.name: score_task(model, tokenizer, task, split, max_items, batch_size)
                                  for task in loaded})


def suite_fingerprint(kind: str, name: SuiteRef, split: str, max_items: int | None) -> str:
    """Identifies a suite's exact definition and data (task fields + the items chosen), for caching the
    base model's scores: any change to a task, its data or the item cap gives a new fingerprint."""
    digest = hashlib.sha256()
    for task_name in suite_task_names(kind, name):
        task = load_task(task_name)
        limit = min(task.n_items, max_items) if max_items else task.n_items
        digest.update(json.dumps(task.definition, sort_keys=True).encode())
        digest.update(json.dumps(select_items(task, split, limit), sort_keys=True).encode())
    return digest.hexdigest()[:16]
