"""Few-shot exemplars read from an installed lm-evaluation-harness task definition, so that a task's prompt is
the reference's own: its description, its exemplars (BBH's three chain-of-thought answers per subtask) and
its delimiters, framed by its own question and answer templates.

A task names the definition by its path under `lm_eval/tasks/` (`fewshot: {lm_eval: bbh/cot_fewshot/
{subtask}.yaml}`); nothing is copied into this repository. lm-eval's own YAML loader is private and loads
with `yaml.load` to run `!function` tags, so the definition is read here with `safe_load`, its `include`
resolved the way lm-eval resolves it (the included file first, the including file's keys win).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

DEFAULT_FEWSHOT_DELIMITER = "\n\n"  # lm-eval's TaskConfig defaults
DEFAULT_TARGET_DELIMITER = " "


class FewshotError(ValueError):
    """A few-shot definition that cannot be found or read; the message names the field and what is allowed."""


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@lru_cache(maxsize=None)
def lm_eval_definition(rel: str) -> dict[str, Any]:
    """The lm-eval task YAML at `rel` (under lm_eval/tasks/), its includes merged in."""
    path = lm_eval_tasks_dir() / rel
    if not path.is_file():
        raise FewshotError(f"fewshot.lm_eval: {rel!r} is not a task of the installed lm-eval ({lm_eval_tasks_dir()}); "
                           "allowed: a YAML path under lm_eval/tasks/")
    return _read(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:  # a !function tag, say: such definitions run code and are not read
        raise FewshotError(f"fewshot.lm_eval: {path.name} cannot be read safely ({str(err).splitlines()[0]})") from None
    included = data.pop("include", None)
    if included is None:
        return data
    merged: dict[str, Any] = {}
    for name in included if isinstance(included, list) else [included]:
        merged.update(_read(path.parent / name))
    return {**merged, **data}


def context(definition: dict[str, Any], render: Callable[[str, dict[str, Any]], str]) -> str:
    """What precedes the question: the description, then each exemplar as question template + target
    delimiter + answer template + few-shot delimiter (lm-eval's plain-text `fewshot_context`)."""
    shots = definition.get("fewshot_config", {})
    exemplars = shots.get("samples", [])[:definition.get("num_fewshot", 0)]
    text, target = shots.get("doc_to_text", definition["doc_to_text"]), shots.get("doc_to_target", definition["doc_to_target"])
    target_delimiter = shots.get("target_delimiter", definition.get("target_delimiter", DEFAULT_TARGET_DELIMITER))
    fewshot_delimiter = shots.get("fewshot_delimiter", definition.get("fewshot_delimiter", DEFAULT_FEWSHOT_DELIMITER))
    return (definition.get("description") or "") + "".join(
        render(text, ex) + target_delimiter + render(target, ex) + fewshot_delimiter for ex in exemplars)
