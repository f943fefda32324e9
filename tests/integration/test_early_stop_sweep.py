"""Early stopping in a real sweep (local Ray, tiny model): some trials end `stopped_early` with valid,
analysable checkpoints, Optuna records them with the values they reached, the front is computed over
them, and a sweep resumed after its driver was killed keeps every decision made before."""
from __future__ import annotations

import json
import os
import signal

import optuna
import pytest
import yaml

from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import checkpoints
from tests import sweeps as sw
from tests.helpers import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _config(tmp_path, model_dir) -> str:
    cfg = tiny_config(model_dir, tmp_path / "sweep", steps=12, checkpoint_every=2)
    cfg["methods"] = [{"name": "lora", "settings": [{"r": 1}, {"r": 2}, {"r": 4}]}, {"name": "ia3"}]
    cfg["search"] = {"sampler": "grid", "lr": [5e-3, 5e-2],
                     "early_stop": {"kind": "hv", "grace_steps": 2, "reduction_factor": 3}}
    cfg["resources"] = {"cpus_per_worker": 1}
    cfg["tracking"] = {"enabled": False}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_dominated_trials_stop_early_and_stay_stopped_across_a_resume(tmp_path, tiny_model_dir, cluster):
    config = _config(tmp_path, tiny_model_dir)
    where = SweepDir(tmp_path / "sweep")
    proc = sw.sweep(config, cluster, start_new_session=True)
    sw.wait_for(lambda: sum(r["status"] == "stopped_early" for r in where.collect()) >= 1, proc, timeout=900)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies after a decision
    proc.wait()
    stopped_before = {r["trial_id"]: r for r in where.collect() if r["status"] == "stopped_early"}

    resumed = sw.sweep(config, cluster, "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    results = {r["trial_id"]: r for r in where.collect() if r["status"] != "abandoned"}  # see abandon_leftovers
    assert len(results) >= 8  # 8 configurations; a trial the killed driver had not recorded is kept too
    for trial_id, before in stopped_before.items():  # decided before the kill: not trained again
        assert results[trial_id] == before
    stopped = [r for r in results.values() if r["status"] == "stopped_early"]
    completed = [r for r in results.values() if r["status"] == "completed"]
    assert stopped and completed and len(stopped) + len(completed) == len(results)
    for result in stopped:
        assert result["final"]["step"] == result["stopped_at_step"] < 12
        for point in result["checkpoints"]:
            checkpoints.load(point["path"])  # every checkpoint it kept verifies
    trained = sum(r["final"]["step"] for r in results.values())
    assert trained < len(results) * 12  # compute was saved

    study = sw.study(where.root)
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    finals = {(r["final"]["gain"], r["final"]["forgetting"]) for r in results.values()}
    told = [tuple(t.values) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(told) >= 7 and set(told) <= finals  # stopped trials are told with the values they reached

    analysed = sw.cli("analyze", str(where.root))
    assert analysed.returncode == 0, analysed.stderr[-2000:]
    points = json.loads(where.pareto.read_text())["points"]
    assert {p["label"] for p in points} == set(results)  # stopped trials are operating points too
