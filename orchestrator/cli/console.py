"""What a person sees in the terminal: a progress bar per trial, the end-of-run table, suite and budget
tables, rewinding lines."""
from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evals import uncertainty
from methods import registry
from orchestrator.config import SweepConfig
from orchestrator.results.sweep_analysis import summary_row
from orchestrator.storage.sweep_dir import Status, SweepDir, TrialDir
from orchestrator.trials import trial

# Logs and CI are not terminals; give tables room there instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 130)


def run_with_progress(cfg: SweepConfig, method: str, setting: dict[str, Any], trial_dir: TrialDir) -> dict[str, Any]:
    columns = (TextColumn("[bold]{task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[phase]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("trial", total=cfg.train.steps, name=trial_dir.trial_id, loss="-", phase="")
        result = trial.run(
            cfg, method, setting, trial_dir,
            on_step=lambda step, rec: progress.update(task, completed=step, loss=f"{rec['loss']:.3f}"),
            on_phase=lambda text: progress.update(task, phase=text))
        progress.update(task, phase=result["status"])
    if result["status"] != Status.COMPLETED:
        console.print(f"[red]trial {trial_dir.trial_id} failed:[/red] {result.get('failure_reason')}")
    return result


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_ci(value: float | None, interval: list[float] | None) -> str:
    """+0.193 ± 0.031: the estimate and the half-width of its 95% interval."""
    if value is None or not interval:
        return _fmt(value, "+.3f")
    return f"{value:+.3f} ± {uncertainty.half_width(interval):.3f}"


def _count(value: int | None) -> str:
    """2,136,960 -> 2.14M: narrow enough for an 80-column table, exact in the result JSON."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return str(value)


def results_table(cfg: SweepConfig, results: list[dict[str, Any]], front: list[str] | None = None,
                  width: int | None = None) -> Table:
    """One row per distinct configuration (a trial that reused an identical finished one is not repeated);
    base-model scores, shared by every row, go in the caption. Fits an 80-column terminal: below 100
    columns the finetuned target and retention scores (base + gain, base - forgetting) are left to the
    caption's arithmetic so that every estimate keeps its interval."""
    rows = [r for r in map(summary_row, results) if not r["duplicate_of"]]
    base = next((r for r in rows if r["target_base"] is not None), None)
    show_status = any(r["status"] != Status.COMPLETED for r in rows)  # failed, or stopped early
    show_regime = len({r["regime"] for r in rows}) > 1  # SFT and GRPO trials on one frontier
    show_scores = width is None or width >= 100
    table = Table(title=f"{cfg.name}: target gain vs forgetting ({cfg.model.name})", box=None,
                  padding=(0, 1), pad_edge=False, header_style="bold underline")
    headers = ["trial", "method", "setting", "params"] + (
        ["target", "gain", "retention", "forgetting"] if show_scores else ["gain", "forgetting"])
    for header in headers + (["status"] if show_status else []):
        table.add_column(header, justify="left" if header in ("trial", "method", "setting", "status") else "right",
                         overflow="fold")
    for row in rows:
        method = f"{row['method']} {row['regime']}" if show_regime else row["method"]  # "lora grpo": fits 80 columns
        scores = {"target": _fmt(row["target"], ".3f"), "gain": _fmt_ci(row["gain"], row["gain_ci"]),
                  "retention": _fmt(row["retention"], ".3f"),
                  "forgetting": _fmt_ci(row["forgetting"], row["forgetting_ci"])}
        cells = [row["trial"] + ("*" if row["trial"] in (front or []) else " "), method, row["setting"],
                 _count(row["trainable_params"])] + [scores[h] for h in headers[4:]]
        table.add_row(*cells, *([row["status"]] if show_status else []))
    if base is not None:
        table.caption = f"base model: target {base['target_base']:.3f}, retention {base['retention_base']:.3f}"
    return table


def print_table(cfg: SweepConfig, results: list[dict[str, Any]], front: list[str] | None = None) -> None:
    console.print(results_table(cfg, results, front, console.width))
    reused = sum(1 for r in results if r.get("duplicate_of"))
    if reused:
        console.print(f"{reused} trial(s) proposed a configuration already run and reused its result.", soft_wrap=True)
    console.print("gain = target(ft) - target(base); forgetting = retention(base) - retention(ft); "
                  "scores in [0, 1], higher is better; ± = half-width of the 95% paired bootstrap interval over "
                  "the evaluation items; trial* = on the Pareto front of the sweep's objectives.",
                  soft_wrap=True)
    where = SweepDir.of(cfg)
    console.print(f"results: {where.display(where.trial('<trial>').result_path)}, "
                  f"summary: {where.display(where.summary)}", soft_wrap=True)


def print_suite(scores: dict[str, Any]) -> None:
    table = Table(title=f"suite {scores['suite']}: {scores['score']:.4f}")
    for header in ("task", "metric", "score", "n"):
        table.add_column(header)
    for name, task in scores["tasks"].items():
        table.add_row(name, task["metric"], f"{task['score']:.4f}", str(task.get("n", "")))
    console.print(table)


def print_budget(model: str, budget: float, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{model}: settings nearest to {budget:,.0f} trainable parameters")
    for header in ("method", "setting", "trainable", "x budget"):
        table.add_column(header, justify="right" if header in ("trainable", "x budget") else "left")
    for row in rows:
        shown = f"{row['knob']}={row['value']}" if row["knob"] else "(fixed)"
        table.add_row(row["method"], shown, f"{row['trainable']:,}", f"{row['ratio']:.2f}")
    console.print(table)


def print_methods() -> None:
    table = Table(title="registered methods (peft builds every one it has)")
    for header in ("method", "aliases", "budget knob", "interpolation path", "what it trains"):
        table.add_column(header, overflow="fold")
    for name in registry.names():
        spec = registry.get(name)
        path = spec.interpolation.path + ("" if spec.interpolation.path == "generator" else f" ({spec.interpolation.why})")
        table.add_row(name, ", ".join(spec.aliases), spec.budget_knob or "-", path, spec.doc)
    console.print(table)


def print_rewind(summary: dict[str, Any]) -> None:
    for record in summary["trials"]:
        console.print(f"{record['trial_id']} ({record['method']}): final target {record['final']['target']:.4f} "
                      f"retention {record['final']['retention']:.4f} -> {record['chosen']['label']}: target "
                      f"{record['chosen']['target']:.4f} retention {record['chosen']['retention']:.4f} (validation); "
                      f"test: target {record['chosen_test']['target']:.4f} retention "
                      f"{record['chosen_test']['retention']:.4f}", soft_wrap=True, highlight=False)
    hv = summary["hypervolume"]
    console.print(f"frontier hypervolume (validation, reference {hv['reference']}): before {hv['before']:.5g}, "
                  f"after {hv['after']:.5g}", soft_wrap=True, highlight=False)
    if summary.get("test_hypervolume"):
        console.print(rewind_test_line(summary["test_hypervolume"]), soft_wrap=True, highlight=False)


def rewind_test_line(hv: dict[str, Any]) -> str:
    """The claim rewinding is judged by: the front's test hypervolume before and after, with intervals."""
    def ci(interval: list[float]) -> str:
        return f"[{interval[0]:.4g}, {interval[1]:.4g}]"
    return (f"frontier hypervolume (test, reference {hv['reference']}): before {hv['before']:.5g} {ci(hv['before_ci'])}, "
            f"after {hv['after']:.5g} {ci(hv['after_ci'])}, difference {hv['difference']:+.5g} "
            f"{ci(hv['difference_ci'])} (95% paired bootstrap over test items)")
