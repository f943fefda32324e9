"""The installable distribution: the wheel holds the shipped configs, model configs and task YAMLs, and the
installed package plans sweeps by config name from a directory that is not the checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(dist), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = dist.glob("peft_arena-*.whl")
    return found


def test_the_wheel_holds_the_data_the_commands_read(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"orchestrator/configs/{p.name}" for p in (ROOT / "orchestrator" / "configs").glob("*.yaml")}
    models = {f"methods/model_configs/{p.name}" for p in (ROOT / "methods" / "model_configs").glob("*.json")}
    tasks = {f"evals/tasks/{p.name}" for p in (ROOT / "evals" / "tasks").glob("*.yaml")}
    assert len(shipped) == 6 and len(models) == 3 and len(tasks) == 23
    assert shipped | models | tasks | {"evals/suites.yaml", "analysis/data/peft_arena_2026.yaml"} <= names
    assert not any(n.startswith(("tests/", "bench/", "docs/")) for n in names)  # the package, not the checkout


def test_the_installed_package_runs_from_another_directory(wheel, tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy wins over the checkout's editable one

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                              timeout=300, cwd=elsewhere, env=env)

    where = subprocess.run([sys.executable, "-c", "import orchestrator, methods; print(orchestrator.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    quick = cli("sweep", "quick", "--dry-run")
    assert quick.returncode == 0 and "grid size 6" in quick.stdout, quick.stderr[-2000:]
    paper = cli("sweep", "paper-qwen2.5-7b-sft", "--dry-run")
    assert paper.returncode == 0 and '"block_size": 128' in paper.stdout, paper.stderr[-2000:]
    budget = cli("budget", "--model", "qwen2.5-7b", "--budget", "2e7", "--json")
    rows = {r["method"]: r for r in json.loads(budget.stdout)["methods"]}
    assert rows["lora"]["trainable"] == 20_185_088 and rows["oft"]["value"] == 32
    assert cli("init", "mine").returncode == 0 and (elsewhere / "mine.yaml").is_file()
    assert cli("sweep", "mine.yaml", "--dry-run").returncode == 0
    assert not (elsewhere / "runs").exists()  # a dry run writes nothing
