"""Where checkpoints are scored (eval.mode) changes neither what a trial is nor which checkpoints still
need scores; a pool actor reloads a model only when it is not among the last ones it used."""
from __future__ import annotations

import json

import yaml

from evals import runner
from orchestrator import config
from orchestrator.storage.sweep_dir import TrialDir
from orchestrator.trials import checkpoints, trial


def test_an_actor_keeps_its_last_models_and_reloads_only_the_others():
    loaded = []

    def load(spec):
        loaded.append(spec["n"])
        return f"model-{spec['n']}", "tokenizer"

    scorer = runner.ChunkScorer(load, threads=1, batch_size=8)
    for n in [1, 1, 2, 1, 2, 3, 2, 1]:
        assert scorer.model(runner.spec_key({"n": n}))[0] == f"model-{n}"
    # 3 evicts 1 (least recently used), so 1 is loaded again at the end; 2 never is
    assert loaded == [1, 2, 3, 1] and runner.MODELS_KEPT == 2


def test_the_trial_hash_ignores_where_it_is_scored():
    data = yaml.safe_load(config.shipped_configs()["quick"].read_text())
    inline = config.validate(data)
    pool = config.validate({**data, "eval": {**data.get("eval", {}), "mode": "pool", "pool_size": 3,
                                             "cpus_per_actor": 2, "gpus_per_actor": 0.25}})
    assert trial.trial_config(inline, "lora", {}) == trial.trial_config(pool, "lora", {})
    changed = config.validate({**data, "eval": {**data.get("eval", {}), "max_items": 7}})
    assert trial.trial_config(changed, "lora", {}) != trial.trial_config(inline, "lora", {})  # what is scored counts


def test_a_resumed_trial_scores_exactly_the_saved_checkpoints_that_have_no_scores(tmp_path):
    trial_dir = TrialDir(tmp_path / "t")
    for step in (2, 4, 6, 8):
        directory = trial_dir.checkpoint(step)
        directory.mkdir(parents=True)
        (directory / checkpoints.META_FILE).write_text(json.dumps({"step": step, "loss": 1.0}))
    trial_dir.checkpoint(10).mkdir()  # a write that never completed: no checkpoint.json
    result = {"checkpoints": [{"step": 2}, {"step": 6}]}
    pool = trial._unscored_checkpoints(trial_dir, result, 0, 8)  # the service may have held any of them
    assert [step for step, _ in pool] == [4, 8]
    assert [d.name for _, d in pool] == [trial_dir.checkpoint(4).name, trial_dir.checkpoint(8).name]
    inline = trial._unscored_checkpoints(trial_dir, result, 8, 8)  # only the weights the model holds now
    assert [step for step, _ in inline] == [8]
    assert trial._unscored_checkpoints(trial_dir, result, 4, 4) == [(4, trial_dir.checkpoint(4))]
