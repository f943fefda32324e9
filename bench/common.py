"""Shared by every benchmark: where results go and the one JSON shape they take."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The processor and whether it has AVX-512: the same 2-core box is 3x faster with it (fp32 matmuls)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "unknown cpu"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{name}, {'AVX-512' if ' avx512f' in info else 'AVX2' if ' avx2' in info else 'no AVX2'}"


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus ({cpu_model()}) {platform.python_version()}"


def record(name: str, metric: str, ours: float, baseline: float, goal: str, met: bool, **details: Any) -> dict:
    """Write bench/results/<name>.json: ratio = ours / baseline, with the goal and whether it was met."""
    result = {"name": name, "metric": metric, "ours": ours, "baseline": baseline, "ratio": ours / baseline,
              "goal": goal, "met": bool(met), "machine": machine(),
              "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **details}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(f"{name}: ours {ours:.4g} vs baseline {baseline:.4g} -> ratio {result['ratio']:.3f} "
          f"(goal {goal}: {'met' if met else 'missed'})")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_sweep(out: Path, *args: str) -> None:
    """`peft-arena sweep *args` into `out`, resumed when an earlier run left a sweep there (the long
    benchmark sweeps span several sittings on a 2-core machine)."""
    resume = ["--resume"] if (out / "sweep_config.json").is_file() else []
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", *args, "--set", f"output_dir={out}", *resume],
                   check=True)
