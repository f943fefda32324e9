"""Shared by every benchmark: where results go and the one JSON shape they take."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus {platform.python_version()}"


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
