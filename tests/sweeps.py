"""Shared by the sweep and fault tests: a real two-node local Ray cluster, tiny-model sweep configs, and
helpers that watch a running sweep the way a user would (its dir and its Optuna study)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from orchestrator.process import free_port  # noqa: F401 - the sweep and fault tests use it from here
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.tracking import server
from tests.helpers import tiny_config, wait_until

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "clusters" / "local-multinode.sh"


def remove_worker(address: str) -> None:
    subprocess.run([str(SCRIPT), "remove-worker", address.rsplit(":", 1)[1]], check=True, timeout=60)


def start_cluster(cpus_per_node: int = 1, env: dict[str, str] | None = None) -> str:
    """A head and a second worker node on this machine (clusters/local-multinode.sh); returns the address.
    `env` is added to the nodes' environment (what each node brings itself, such as credentials)."""
    port = str(free_port())
    out = subprocess.run([str(SCRIPT), "start", port, str(cpus_per_node)], check=True, capture_output=True, text=True,
                         env={**_script_env(), **(env or {})}, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def wait_idle(address: str, cpus: float = 2.0) -> None:
    """Until both nodes' `cpus` are there and free: a test sharing the cluster starts only once the previous
    test's trials (a killed driver's included, which Ray reaps on its own time) have let go."""
    def idle() -> bool:
        out = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address", address],
                             capture_output=True, text=True, timeout=120).stdout
        usage = re.search(r"([\d.]+)/([\d.]+) CPU", out)
        return usage is not None and float(usage.group(1)) == 0.0 and float(usage.group(2)) == cpus
    wait_until(idle, f"all {cpus:g} CPUs of the cluster at {address} free", poll=0.5)


def worker_logs(address: str) -> str:
    """What the cluster's worker processes wrote to stderr (warnings of trials land there, not in the
    driver's output)."""
    temp = Path(f"/tmp/ray-arena-{address.rsplit(':', 1)[1]}")  # clusters/local-multinode.sh's temp dir
    return "".join(p.read_text(errors="replace") for p in temp.glob("session_*/logs/worker-*.err"))


def stop_cluster(address: str) -> None:
    subprocess.run([str(SCRIPT), "stop", address.rsplit(":", 1)[1]], env=_script_env(), timeout=180)  # this one only


def _script_env() -> dict[str, str]:
    return {**os.environ, "RAY": str(Path(sys.executable).parent / "ray")}


def write_config(tmp_path: Path, model_dir: Path, *, samples: int, concurrent: int, steps: int = 4,
                 checkpoint_every: int = 2, max_failures: int = 1, **sections) -> Path:
    cfg = tiny_config(model_dir, tmp_path / "sweep", steps=steps, checkpoint_every=checkpoint_every)
    cfg["methods"] = [{"name": "lora"}, {"name": "oft"}]
    cfg["search"] = {"sampler": "nsga2", "num_samples": samples, "max_concurrent_trials": concurrent,
                     "budgets": [1000, 4000], "budget_tolerance": 10}
    cfg["resources"] = {"cpus_per_worker": 1}
    cfg["failure"] = {"max_failures": max_failures}
    cfg["tracking"] = {"enabled": False}
    cfg.update(sections)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def sweep(config: Path, address: str, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--address", address,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A `peft-arena` command in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def results(sweep_dir: Path) -> list[dict]:
    """What the sweep has written so far, read as every command reads it."""
    return SweepDir(sweep_dir).collect()


def study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=SweepDir(sweep_dir).optuna_url)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 900, what: str | None = None) -> None:
    """Until `predicate` holds while the sweep `proc` runs (its ending first fails, with its output)."""
    wait_until(predicate, what or getattr(predicate, "__name__", "the awaited event"), timeout=timeout,
               alive=proc, poll=0.1)


def start_mlflow(store: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store in `store` (restartable on the same store),
    started with the command `peft-arena ui` uses."""
    store.mkdir(parents=True, exist_ok=True)
    command, env = server.server_command(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts", "127.0.0.1", port)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server.wait_healthy(f"http://127.0.0.1:{port}", timeout=180)
    return proc


def stop_mlflow(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
