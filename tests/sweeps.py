"""Shared by the sweep and fault tests: a real two-node local Ray cluster, tiny-model sweep configs, and
helpers that watch a running sweep the way a user would (its dir and its Optuna study)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from orchestrator.tracking import free_port  # noqa: F401 - the sweep and fault tests use it from here
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "clusters" / "local-multinode.sh"


def remove_worker(address: str) -> None:
    subprocess.run([str(SCRIPT), "remove-worker", address.rsplit(":", 1)[1]], check=True, timeout=60)


@pytest.fixture()
def cluster(tmp_path, isolated_cache):
    """A head and a second worker node, one CPU each; stopped (with everything Ray) afterwards."""
    env = {**os.environ, "RAY": str(Path(sys.executable).parent / "ray")}
    port = str(free_port())
    out = subprocess.run([str(SCRIPT), "start", port, "1"], check=True, capture_output=True, text=True, env=env,
                         timeout=180)
    yield out.stdout.strip().splitlines()[-1]
    subprocess.run([str(SCRIPT), "stop", port], env=env, timeout=180)  # this cluster only


def write_config(tmp_path: Path, model_dir: Path, *, samples: int, concurrent: int, steps: int = 4,
                 checkpoint_every: int = 2, max_failures: int = 1, **sections) -> Path:
    cfg = tiny_config(model_dir, tmp_path / "sweep", steps=steps, checkpoint_every=checkpoint_every)
    cfg["methods"] = [{"name": "lora"}, {"name": "oft"}]
    cfg["search"] = {"sampler": "nsga2", "num_samples": samples, "max_concurrent_trials": concurrent,
                     "budgets": [1000, 4000], "budget_tolerance": 10}
    cfg["resources"] = {"cpus_per_trial": 1}
    cfg["failure"] = {"max_failures": max_failures}
    cfg["tracking"] = {"enabled": False}
    cfg.update(sections)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def sweep(config: Path, address: str, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--address", address,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def results(sweep_dir: Path) -> list[dict]:
    out = []
    for path in (sweep_dir / "trials").glob("*/result.json"):
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError:  # being written right now (never the case after the sweep ends)
            pass
    return out


def study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")




def start_mlflow(store: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store in `store` (restartable on the same store)."""
    from orchestrator import tracking

    store.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tracking.wait_healthy(f"http://127.0.0.1:{port}", timeout=180)
    return proc


def stop_mlflow(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
