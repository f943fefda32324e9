"""Real multi-objective sweeps on a real local Ray cluster (two nodes, started by the test) with the tiny
model: placement on both nodes, driver SIGKILL + --resume, and a killed trial worker retried from its
checkpoint. Each check reads the sweep dir and the Optuna study the way a user would."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "clusters" / "local-multinode.sh"
pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def cluster(tmp_path, isolated_cache):
    """A head and a second worker node, one CPU each; stopped (with everything Ray) afterwards."""
    env = {**os.environ, "RAY": str(Path(sys.executable).parent / "ray")}
    out = subprocess.run([str(SCRIPT), "start", str(_free_port()), "1"], check=True, capture_output=True,
                         text=True, env=env, timeout=180)
    yield out.stdout.strip().splitlines()[-1]
    subprocess.run([str(SCRIPT), "stop"], env=env, timeout=180)


def _write_config(tmp_path: Path, model_dir: Path, *, samples: int, concurrent: int, steps: int = 4,
                  checkpoint_every: int = 2, max_failures: int = 1) -> Path:
    cfg = tiny_config(model_dir, tmp_path / "sweep", steps=steps, checkpoint_every=checkpoint_every)
    cfg["methods"] = [{"name": "lora"}, {"name": "oft"}]
    cfg["search"] = {"sampler": "nsga2", "num_samples": samples, "max_concurrent_trials": concurrent,
                     "budgets": [1000, 4000], "budget_tolerance": 10}
    cfg["resources"] = {"cpus_per_trial": 1}
    cfg["failure"] = {"max_failures": max_failures}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _sweep(config: Path, address: str, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--address", address,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _results(sweep_dir: Path) -> list[dict]:
    out = []
    for path in (sweep_dir / "trials").glob("*/result.json"):
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError:  # being written right now (never the case after the sweep ends)
            pass
    return out


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_two_node_multi_objective_sweep_places_trials_on_both_nodes(tmp_path, tiny_model_dir, cluster):
    config = _write_config(tmp_path, tiny_model_dir, samples=4, concurrent=2)
    proc = _sweep(config, cluster)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    results = _results(tmp_path / "sweep")
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    assert len({r["node_id"] for r in results}) == 2, "trials ran on one node only"
    study = _study(tmp_path / "sweep")
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 4
    assert len(study.directions) == 2  # multi-objective: target_gain max, forgetting min
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["front"] and set(summary["front"]) <= {r["trial_id"] for r in results}
    assert "on the Pareto front" in output


def test_driver_sigkill_then_resume_finishes_exactly_the_planned_trials(tmp_path, tiny_model_dir, cluster):
    config = _write_config(tmp_path, tiny_model_dir, samples=4, concurrent=1, steps=12, checkpoint_every=4)
    sweep_dir = tmp_path / "sweep"
    proc = _sweep(config, cluster, start_new_session=True)
    _wait_for(lambda: any(r["status"] == "completed" for r in _results(sweep_dir)), proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it spawned, mid-sweep
    proc.wait()
    finished_before = {r["trial_id"] for r in _results(sweep_dir) if r["status"] == "completed"}
    assert 0 < len(finished_before) < 4

    resumed = _sweep(config, cluster, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    results = _results(sweep_dir)
    completed = [r["trial_id"] for r in results if r["status"] == "completed"]
    assert len(completed) == 4 and len(set(completed)) == 4
    assert finished_before <= set(completed)  # nothing finished was lost or redone under a new id
    study = _study(sweep_dir)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert optuna.trial.TrialState.RUNNING not in states


def test_resume_with_another_config_is_refused(tmp_path, tiny_model_dir, cluster):
    config = _write_config(tmp_path, tiny_model_dir, samples=1, concurrent=1)
    proc = _sweep(config, cluster)
    proc.communicate(timeout=600)
    changed = yaml.safe_load(config.read_text())
    changed["train"]["lr"] = 0.123
    config.write_text(yaml.safe_dump(changed))
    again = _sweep(config, cluster, "--resume")
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 2 and "belongs to another config" in output


def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, tiny_model_dir, cluster):
    config = _write_config(tmp_path, tiny_model_dir, samples=1, concurrent=1, steps=300, checkpoint_every=50)
    sweep_dir = tmp_path / "sweep"
    proc = _sweep(config, cluster)

    def checkpointed() -> bool:
        return any(r["status"] == "running" and r["checkpoints"] for r in _results(sweep_dir))

    _wait_for(checkpointed, proc)
    victim = next(r for r in _results(sweep_dir) if r["status"] == "running")
    os.kill(victim["pid"], signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    result = json.loads((sweep_dir / "trials" / victim["trial_id"] / "result.json").read_text())
    assert result["status"] == "completed" and result["attempts"] == 2
    assert result["resumed_from_step"] >= 50 and result["pid"] != victim["pid"]
    assert [c["step"] for c in result["checkpoints"]] == [50, 100, 150, 200, 250, 300]
