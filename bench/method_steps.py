"""Step time of every registered method relative to LoRA, at a budget matched to LoRA r8, on the default
model, through the same DeepSpeed trainer a trial uses. Goal: every method <= 1.5x LoRA.

Each method runs in its own process, watched: one that grows past --max-rss-gb is stopped and reported
as missed for memory (peft's HRA needed more than this 24 GiB machine has at LoRA r8's budget).

    python -m bench.method_steps [--batch 2] [--length 256] [--steps 3] [--method oft ...]
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time

import psutil

import torch

from bench.common import median, record
from methods import budget, registry
from orchestrator.config import ModelConfig, TrainConfig
from orchestrator.storage.sweep_dir import TrialDir
from orchestrator.trials import models, regimes, trainer

GOAL = 1.5


def step_seconds(method: str, setting: dict, batch: int, length: int, steps: int) -> tuple[float, int]:
    """Median step time after one warm-up step, and the trainable count, for one method."""
    model, tokenizer = models.load(ModelConfig())
    generator = torch.Generator().manual_seed(0)
    pairs = [([], torch.randint(3, len(tokenizer), (length,), generator=generator).tolist()) for _ in range(64)]
    first = regimes.collate(pairs[:batch], length, tokenizer.pad_token_id)
    wrapped = registry.wrap(model, method, setting, "all-linear", init_batch=first)
    cfg = TrainConfig(steps=steps + 1, batch_size=batch, max_length=length, lr=1e-5, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        # checkpoint_every beyond the run: only the final checkpoint is written, after the timed steps
        result = trainer.train(wrapped, regimes.SFT(pairs, cfg, tokenizer.pad_token_id), cfg, TrialDir(tmp),
                               {"method": method})
    count = registry.count_trainable(wrapped)
    del model, wrapped
    gc.collect()
    return median([r["step_s"] for r in result.log[1:]]), count


def _tree_rss_gb(pid: int) -> float:
    """RSS of a process and its descendants; ones that exit while being read (DeepSpeed's short-lived
    helper processes) count as zero."""
    total = 0
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for member in family:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


def measure_in_child(method: str, setting: dict, args: argparse.Namespace) -> dict:
    """Run one method in a child process; stop it if its memory passes the cap."""
    command = [sys.executable, "-m", "bench.method_steps", "--child", method, "--setting", json.dumps(setting),
               "--batch", str(args.batch), "--length", str(args.length), "--steps", str(args.steps)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _tree_rss_gb(child.pid))
        if peak > args.max_rss_gb:
            child.kill()
            child.wait()
            return {"error": f"stopped at {peak:.1f} GiB RSS (cap {args.max_rss_gb} GiB)", "peak_rss_gb": peak}
        time.sleep(0.2)
    out = child.stdout.read().strip().splitlines()
    child.wait()
    if child.returncode != 0 or not out:
        return {"error": f"exit code {child.returncode}", "peak_rss_gb": peak}
    return {**json.loads(out[-1]), "peak_rss_gb": peak}


def matched_setting(config: object, method: str, target: int) -> tuple[dict, bool]:
    """The method's setting nearest LoRA r8's count, or its default setting when no setting comes within
    a factor of 2 (VeRA: its count grows by one per rank and layer, so LoRA r8's budget would need
    r > 10,000, a shape nobody trains; its default r=256 is the paper's)."""
    solution = budget.solve(config, method, target, tolerance=float("inf"))
    if 0.5 <= solution.count / target <= 2.0:
        return solution.setting, True
    return registry.get(method).resolve_setting(None), False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--method", action="append")
    parser.add_argument("--max-rss-gb", type=float, default=18.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one method, in this process; the parent reads the last line
        seconds, count = step_seconds(args.child, json.loads(args.setting), args.batch, args.length, args.steps)
        print(json.dumps({"seconds": seconds, "trainable": count, "threads": torch.get_num_threads()}))
        return
    config = budget.load_model_config("smollm2-135m")
    lora_budget = budget.count_trainable(config, "lora", {"r": 8})
    lora = measure_in_child("lora", {"r": 8}, args)
    for method in args.method or [m for m in registry.names() if m != "lora"]:
        setting, matched = matched_setting(config, method, lora_budget)
        got = measure_in_child(method, setting, args)
        seconds = got.get("seconds", float("inf"))
        record(f"method_step_time_{method}", "seconds per optimizer step (lower is better)", seconds, lora["seconds"],
               f"<= {GOAL}x LoRA r8", seconds <= GOAL * lora["seconds"], method=method, setting=setting,
               budget_matched=matched,
               trainable=got.get("trainable"), lora_trainable=lora_budget, batch=args.batch, length=args.length,
               threads=got.get("threads"), dtype="float32", peak_rss_gb=round(got["peak_rss_gb"], 2),
               lora_peak_rss_gb=round(lora["peak_rss_gb"], 2), error=got.get("error"))


if __name__ == "__main__":
    main()
