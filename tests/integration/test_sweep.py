"""A real multi-objective sweep on a real two-node local Ray cluster (started by the test) with the tiny
model: trials land on both nodes, the Optuna study is multi-objective, the summary names the front."""
from __future__ import annotations

import json

import optuna
import pytest

from tests import sweeps as sw

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_two_node_multi_objective_sweep_places_trials_on_both_nodes(tmp_path, tiny_model_dir, cluster):
    config = sw.write_config(tmp_path, tiny_model_dir, samples=4, concurrent=2)
    proc = sw.sweep(config, cluster)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    finished = sw.results(tmp_path / "sweep")
    assert len(finished) == 4 and all(r["status"] == "completed" for r in finished)
    assert len({r["node_id"] for r in finished}) == 2, "trials ran on one node only"
    study = sw.study(tmp_path / "sweep")
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 4
    assert len(study.directions) == 2  # multi-objective: target_gain max, forgetting min
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["front"] and set(summary["front"]) <= {r["trial_id"] for r in finished}
    assert "on the Pareto front" in output
    assert "tensorboard" not in output.lower()  # the sweep logs to MLflow: no advice that does not apply
