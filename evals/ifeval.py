"""IFEval (Zhou et al. 2023), scored by lm-evaluation-harness 0.4.13's own verifiers: each reply is checked against
its prompt's verifiable instructions ("no commas", "at least 300 words", ...), strictly and loosely (the
reply also tried without its first or last line and without markdown asterisks), per prompt (all followed)
and per instruction.

The verifiers count sentences and tokenize words with NLTK's Punkt model (`punkt_tab`), which NLTK downloads
from GitHub at run time and no package registry ships. Where it is installed (`nltk.download("punkt_tab")`
on a machine with network) it is used. Elsewhere a Punkt model trained by NLTK's own `PunktTrainer` on the
Brown corpus stands in, made once by `peft-arena assets` into the cache. It changes nothing but sentence
boundaries, which only `length_constraints:number_sentences` counts (52 of IFEval's 834 instructions): a
word count, a capital-word count or any other check reads the same tokens either way (tested).
What the verifiers draw at random (langdetect's sampling; a letter where the data names none) is seeded by
the item, so a reply always gets the same verdict.
"""
from __future__ import annotations

import functools
import random
import shutil
from pathlib import Path
from typing import Any, Sequence

from evals import scorers, sources

PUNKT_LANGUAGE = "english"


def punkt_root() -> Path:
    """The NLTK data root in the cache that holds the stand-in model."""
    return sources.cache_dir() / "nltk_data"


def _find_punkt() -> str | None:
    import nltk

    try:
        return str(nltk.data.find(f"tokenizers/punkt_tab/{PUNKT_LANGUAGE}/"))
    except LookupError:
        return None


def train_punkt(target: Path | None = None) -> Path:
    """Train Punkt on the Brown corpus's paragraphs (about a million words, 20 s on 2 cores) and write it
    in NLTK's punkt_tab format, where `nltk.data` finds it."""
    import nltk
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    root = target or punkt_root()
    folder = root / "tokenizers" / "punkt_tab" / PUNKT_LANGUAGE
    if (folder / "abbrev_types.txt").is_file():
        return folder
    paragraphs = sources.brown_paragraphs({"kind": "brown_paragraphs", "min_words": 1}, "all")
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train("\n\n".join(p["text"] for p in paragraphs), finalize=True)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # NLTK writes only under its data roots
    staging = folder.with_name(folder.name + ".partial")  # renamed into place: never a half-written model
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    save_punkt_params(trainer.get_params(), str(staging))
    staging.rename(folder)
    return folder


@functools.lru_cache(maxsize=None)
def use_punkt() -> str:
    """Make a Punkt model findable before lm-eval's verifiers import (they look for one at import), and
    say which: NLTK's own where installed, else the cache's stand-in."""
    import nltk

    found = _find_punkt()
    if found is None:
        if str(punkt_root()) not in nltk.data.path:
            nltk.data.path.append(str(punkt_root()))
        found = _find_punkt()
    if found is None:
        raise sources.SourceError(f"ifeval: no Punkt model in {punkt_root()}; run `peft-arena assets` to make it")
    return "a stand-in trained on the Brown corpus" if found.startswith(str(punkt_root())) else "NLTK's punkt_tab"


def ensure_punkt() -> str:
    """A Punkt model for the verifiers, the stand-in trained once where NLTK's own is not installed."""
    if _find_punkt() is None:
        train_punkt()
    return use_punkt()


def lm_eval_verifiers() -> Any:
    """lm-eval's IFEval module (`process_results`, `agg_inst_level_acc`), imported once a Punkt model is
    findable: its import looks for one and, failing, tries to download it."""
    use_punkt()
    from lm_eval.tasks.ifeval import utils

    return utils


def check(reply: str, item: dict[str, Any]) -> dict[str, Any]:
    """One reply's verdicts from lm-eval's `process_results`, kept per item: whether every instruction is
    followed (strict, loose) and how many of them are."""
    process_results = lm_eval_verifiers().process_results
    import langdetect

    # langdetect samples its n-grams at random, and lm-eval draws a random letter where the data asks for a
    # letter count of "!" or "#" (2 of the 834 instructions): seeded by the item, a reply always gets the
    # same verdict, and Python's global random state is left as it was
    langdetect.DetectorFactory.seed = 0
    state = random.getstate()
    random.seed(item["key"])
    try:
        verdict = process_results(item, [reply])
    finally:
        random.setstate(state)
    return {"strict": int(verdict["prompt_level_strict_acc"]), "loose": int(verdict["prompt_level_loose_acc"]),
            "inst_strict": sum(verdict["inst_level_strict_acc"]), "inst_loose": sum(verdict["inst_level_loose_acc"]),
            "instructions": len(item["instruction_id_list"]), "reply": reply}


def ifeval_items(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], max_new_tokens: int,
                 batch_size: int) -> list[dict[str, Any]]:
    """Items: {prompt, doc}, `doc` the IFEval row (key, prompt, instruction_id_list, kwargs). Greedy replies."""
    replies = scorers.generate(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size)
    return [check(reply, it["doc"]) for reply, it in zip(replies, items)]
