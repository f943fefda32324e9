"""What a person sees: a progress bar per trial, the end-of-run table, and the sweep's summary JSON."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator import trial
from orchestrator.config import SweepConfig
from orchestrator.files import atomic_write_json

# Logs and CI are not terminals; give tables room there instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 130)


def trial_name(method: str, setting: dict[str, Any]) -> str:
    """A readable, filesystem-safe trial id: lora-r8, oft-block_size32, ia3-default."""
    parts = [f"{k}{v}" for k, v in sorted(setting.items())] or ["default"]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join([method, *parts]))


def run_with_progress(cfg: SweepConfig, method: str, setting: dict[str, Any], trial_dir: Path) -> dict[str, Any]:
    columns = (TextColumn("[bold]{task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[phase]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("trial", total=cfg.train.steps, name=trial_dir.name, loss="-", phase="")
        result = trial.run(
            cfg, method, setting, trial_dir,
            on_step=lambda step, rec: progress.update(task, completed=step, loss=f"{rec['loss']:.3f}"),
            on_phase=lambda text: progress.update(task, phase=text))
        progress.update(task, phase=result["status"])
    if result["status"] != "completed":
        console.print(f"[red]trial {trial_dir.name} failed:[/red] {result.get('failure_reason')}")
    return result


def _row(result: dict[str, Any]) -> dict[str, Any]:
    final = result.get("final", {})
    base = result.get("base", {})
    return {"trial": result["trial_id"], "method": result["method"], "status": result["status"],
            "setting": result.get("setting"),
            "trainable_params": result.get("params", {}).get("trainable"),
            "target_base": base.get("target", {}).get("score"), "target": final.get("target"),
            "retention_base": base.get("retention", {}).get("score"), "retention": final.get("retention"),
            "gain": final.get("gain"), "forgetting": final.get("forgetting"),
            "train_s": result["timings"].get("train_s"),
            "result": str(Path(result["trial_dir"]) / trial.RESULT_FILE)}


def write_summary(cfg: SweepConfig, results: list[dict[str, Any]], front: list[str] | None = None) -> Path:
    path = cfg.sweep_dir() / "summary.json"
    rows = [_row(r) | {"on_front": r["trial_id"] in (front or [])} for r in results]
    atomic_write_json(path, {"name": cfg.name, "config": cfg.model_dump(), "front": front or [], "trials": rows})
    return path


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _setting_text(setting: dict[str, Any] | None) -> str:
    shown = {k: v for k, v in (setting or {}).items() if k not in ("dropout", "total_step", "cayley_neumann")}
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def print_table(cfg: SweepConfig, results: list[dict[str, Any]], front: list[str] | None = None) -> None:
    table = Table(title=f"{cfg.name}: target gain vs forgetting (base model {cfg.model.name})")
    for header in ("trial", "method", "setting", "params", "target", "gain", "retention", "forgetting",
                   "train s", "front", "status"):
        table.add_column(header, justify="left" if header in ("trial", "method", "setting", "status") else "right")
    for row in map(_row, results):
        table.add_row(row["trial"], row["method"], _setting_text(row["setting"]), _fmt(row["trainable_params"], ","),
                      f"{_fmt(row['target_base'], '.3f')} -> {_fmt(row['target'], '.3f')}",
                      _fmt(row["gain"], "+.3f"),
                      f"{_fmt(row['retention_base'], '.3f')} -> {_fmt(row['retention'], '.3f')}",
                      _fmt(row["forgetting"], "+.3f"), _fmt(row["train_s"], ".0f"),
                      "*" if row["trial"] in (front or []) else "", row["status"])
    console.print(table)
    console.print("gain = target(ft) - target(base); forgetting = retention(base) - retention(ft); "
                  "scores in [0, 1], higher is better; * = on the Pareto front of the sweep's objectives.",
                  soft_wrap=True)
    console.print(f"results: {cfg.sweep_dir()}/trials/<trial>/result.json, summary: {cfg.sweep_dir()}/summary.json",
                  soft_wrap=True)


def print_suite(scores: dict[str, Any]) -> None:
    table = Table(title=f"suite {scores['suite']}: {scores['score']:.4f}")
    for header in ("task", "metric", "score", "n"):
        table.add_column(header)
    for name, task in scores["tasks"].items():
        table.add_row(name, task["metric"], f"{task['score']:.4f}", str(task.get("n", "")))
    console.print(table)
