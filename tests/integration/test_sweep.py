"""A real multi-objective sweep on a real two-node local Ray cluster (started by the test) with the tiny
model: trials land on both nodes, the Optuna study is multi-objective, the summary names the front; and
the user's own data, named by paths relative to the config, reaches every worker."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

import optuna
import pytest

from tests import sweeps as sw

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"
# a user's own data: question/answer pairs in JSONL, a task scoring replies and one (by `base:`) scoring the
# answer's likelihood, all beside the config and named relative to it
CAPITALS = [{"question": f"What is the capital of {country}?", "answer": city} for country, city in [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
    ("Peru", "Lima"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Chile", "Santiago"), ("Cuba", "Havana"),
    ("Greece", "Athens"), ("Norway", "Oslo"), ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Ireland", "Dublin")]]


def _own_data_project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "capitals.jsonl").write_text("".join(json.dumps(item) + "\n" for item in CAPITALS * 4))
    (project / "data" / "capitals.yaml").write_text(yaml.safe_dump(
        {"name": "capitals", "source": {"kind": "jsonl", "path": "capitals.jsonl"}, "prompt": "{{ question }}",
         "scorer": "generate_exact_match", "metric": "exact_match", "max_new_tokens": 4}))
    (project / "data" / "capitals_nll.yaml").write_text(yaml.safe_dump(
        {"name": "capitals_nll", "base": "capitals.yaml", "scorer": "answer_nll", "metric": "answer_token_prob"}))
    for name in ("text_local", "mc_local"):
        for suffix in (".yaml", ".jsonl"):
            shutil.copy(FIXTURES / f"{name}{suffix}", project / "data" / f"{name}{suffix}")
    config = yaml.safe_load(sw.write_config(tmp_path, tiny_model_dir, samples=4, concurrent=2).read_text())
    config["train"]["task"] = "data/capitals.yaml"
    config["eval"] |= {"target_suite": ["data/capitals.yaml", "data/capitals_nll.yaml"],
                       "retention_suite": ["data/text_local.yaml", "data/mc_local.yaml"]}
    path = project / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_node_multi_objective_sweep_places_trials_on_both_nodes(tmp_path, tiny_model_dir, cluster):
    config = _own_data_project(tmp_path, tiny_model_dir)
    elsewhere = tmp_path / "elsewhere"  # the user's shell is not in the project; Ray's workers never are
    elsewhere.mkdir()
    proc = sw.sweep(config, cluster, cwd=elsewhere)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    finished = sw.results(tmp_path / "sweep")
    assert len(finished) == 4 and all(r["status"] == "completed" for r in finished)
    assert set(finished[0]["base"]["target"]["tasks"]) == {"capitals", "capitals_nll"}  # the user's tasks scored
    assert "[4 done, 0 running, 0 failed / 4]" in output
    assert len({r["node_id"] for r in finished}) == 2, "trials ran on one node only"
    study = sw.study(tmp_path / "sweep")
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 4
    # each Optuna trial names its sweep trial and what it trained (optuna-dashboard shows user attributes)
    by_id = {r["trial_id"]: r for r in finished}
    for ot in study.trials:
        r = by_id[ot.user_attrs["trial_id"]]
        assert ot.user_attrs["method"] == r["method"] and json.loads(ot.user_attrs["setting"]) == r["setting"]
    assert len(study.directions) == 2  # multi-objective: target_gain max, forgetting min
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["front"] and set(summary["front"]) <= {r["trial_id"] for r in finished}
    assert "on the Pareto front" in output
    assert "tensorboard" not in output.lower()  # the sweep logs to MLflow: no advice that does not apply
