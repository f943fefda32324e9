"""Orchestration overhead of a sweep: its wall time (Ray start, Tune, Optuna, MLflow, per-trial worker
start-up) vs the sum of its trials' own compute time (each trial's `timings.total_s`). Goal <= 10%.

Reads a finished, never-resumed sweep dir (default: runs/quick, what `make demo` leaves); with --run,
first runs a 2-trial version of the quick sweep into bench/.sweep.

    python -m bench.orchestration_overhead [--sweep-dir runs/quick] [--run]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.common import record
from orchestrator.storage.sweep_dir import SweepDir

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.10


def measure(sweep_dir: Path) -> tuple[float, float, int]:
    where = SweepDir(sweep_dir)
    fits = where.timings()
    if len(fits) != 1 or fits[0]["resumed"]:
        raise SystemExit(f"{sweep_dir}: needs exactly one uninterrupted fit, found {len(fits)}")
    trials = where.collect()
    compute = sum(t["timings"].get("total_s", 0.0) for t in trials if not t.get("duplicate_of"))
    return fits[0]["ended"] - fits[0]["started"], compute, len(trials)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep-dir", default=str(ROOT / "runs" / "quick"))
    parser.add_argument("--run", action="store_true", help="run a 2-trial quick sweep first")
    args = parser.parse_args()
    sweep_dir = Path(args.sweep_dir)
    if args.run or not SweepDir(sweep_dir).timings():
        sweep_dir = ROOT / "bench" / ".sweep"
        subprocess.run(["rm", "-rf", str(sweep_dir)], check=True)
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", "quick",
                        "--set", "search.num_samples=2", "--set", f"output_dir={sweep_dir}"], check=True)
    wall, compute, count = measure(sweep_dir)
    overhead = (wall - compute) / compute
    record("orchestration_overhead", "sweep wall time / sum of trial compute time (lower is better)", wall, compute,
           f"<= {1 + GOAL:.2f}x (overhead <= {GOAL:.0%})", overhead <= GOAL, trials=count, overhead=overhead,
           sweep_dir=str(sweep_dir), note="fit wall time; duplicate trials that reused a result count as 0 compute")


if __name__ == "__main__":
    main()
