"""On the same model and the same items, our multiple-choice acc and acc_norm equal lm-evaluation-harness's
(HFLM backend, zero-shot), on the two WordNet retention tasks."""
from __future__ import annotations

import pytest

from bench import lm_eval_bridge
from evals import suites
from orchestrator.config import ModelConfig
from orchestrator.trials import models


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_our_accuracies_equal_lm_evals(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tokenizer = models.load(ModelConfig())
    for name in ("wordnet_nouns", "wordnet_verbs"):
        task = suites.load_task(name)
        ours = suites.score_task(model, tokenizer, task, max_items=20)
        lm_name = lm_eval_bridge.write_task(task, tokenizer, tmp_path, max_items=20)
        theirs = lm_eval_bridge.evaluate(model, tokenizer, [lm_name], tmp_path)[lm_name]
        assert ours["n"] >= 13
        assert ours["acc"] == pytest.approx(theirs["acc"], abs=1e-12), name
        assert ours["acc_norm"] == pytest.approx(theirs["acc_norm"], abs=1e-12), name
