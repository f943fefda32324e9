"""What live MLflow tracking costs a trial on the default model: the seconds the trial's process spends in
its live run's calls (creating the run, step metrics batched every `tracking.live_every_s`, each
checkpoint's scores) per second of training, through the code a sweep's trial runs, against a real
`mlflow server` on 127.0.0.1 over SQLite. Goal <= 1%. MLflow's system-metrics sampler runs in its own
thread beside them; the same trial with tracking off gives the step time with and without it all.

    python -m bench.tracking_overhead [--steps 12]
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import median, record
from orchestrator import config
from orchestrator.process import free_port
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.tracking import mlflow_runs, server
from orchestrator.trials import trial

GOAL = 0.01


def _timed(spent: list[float], call: Callable[..., None]) -> Callable[..., None]:
    def wrapper(*args: Any) -> None:
        began = time.perf_counter()
        call(*args)
        spent.append(time.perf_counter() - began)
    return wrapper


def overhead(steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command, env = server.server_command(f"sqlite:///{tmp}/mlflow.db", Path(tmp) / "artifacts", "127.0.0.1", port)
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server.wait_healthy(url)
            cfg = config.load("quick", [f"output_dir={tmp}/sweep", f"train.steps={steps}",
                                        f"train.checkpoint_every={steps}", "eval.max_items=8", f"tracking.uri={url}"])
            mlflow_runs.Tracker(cfg)  # the driver's part: experiment and sweep run
            off = trial.run(cfg, "lora", {"r": 8}, SweepDir.of(cfg).trial("off"))
            live, spent = mlflow_runs.LiveRun(cfg), []

            def on_scores(step: int, point: dict[str, Any], params: dict[str, Any]) -> None:
                live.log_checkpoint(point)

            on = trial.run(cfg, "lora", {"r": 8}, SweepDir.of(cfg).trial("live"), on_start=_timed(spent, live.start),
                           on_step=_timed(spent, live.log_step), on_scores=_timed(spent, on_scores))
            _timed(spent, live.close)()
            logged = mlflow_runs.Tracker(cfg).logged_points(live.run_id)
        finally:
            server.terminate()
            server.wait(timeout=60)
    train_s = on["timings"]["train_s"]
    step = {name: median([r["step_s"] for r in result["train_log"][1:]]) for name, result in (("live", on), ("off", off))}
    record("tracking_overhead", "seconds in live MLflow calls / seconds of training (lower is better)", sum(spent),
           train_s, f"<= {GOAL:.0%} of training time", sum(spent) <= GOAL * train_s, calls=len(spent),
           slowest_call_s=max(spent), points_logged=len(logged), live_every_s=cfg.tracking.live_every_s,
           median_step_s_live=step["live"], median_step_s_off=step["off"],
           shape=f"LoRA r8, {steps} steps, one scored checkpoint, SFT batch 8, fp32, default model")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    overhead(parser.parse_args().steps)


if __name__ == "__main__":
    main()
