"""Sweep-level analysis: a sweep dir's trial results -> frontier numbers, figures and the HTML report.

Writes `<sweep>/analysis/pareto.json`, one plotly JSON per figure in `<sweep>/analysis/figures/`, and
`<sweep>/report.html` (self-contained), and logs them to the sweep's MLflow parent run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis import pareto, published, report
from orchestrator import sweep
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.files import atomic_write_bytes, atomic_write_json

ANALYSIS_DIR = "analysis"
# Report sections that later analyses fill in; shown as "not run yet" until their files exist.
LATER_SECTIONS = {"Geometry (weight spectra, activation distortion)": "geometry.html",
                  "Path-wise rewinding": "rewind.html"}


def sweep_points(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per completed trial: its final checkpoint's scores."""
    points = []
    for r in results:
        if r.get("status") != "completed" or "final" not in r:
            continue
        setting = " ".join(f"{k}={v}" for k, v in r["setting"].items()
                           if k not in ("dropout", "total_step", "cayley_neumann"))
        points.append({"label": r["trial_id"], "method": r["method"], "setting": setting,
                       "params": r["params"]["trainable"], "target": r["final"]["target"],
                       "retention": r["final"]["retention"], "gain": r["final"]["gain"],
                       "forgetting": r["final"]["forgetting"]})
    return points


def _objectives(cfg: SweepConfig) -> list[tuple[str, str]]:
    """The sweep's objectives in frontier terms (target_gain is the point's `gain`)."""
    rename = {"target_gain": "gain"}
    return [(rename.get(o.name, o.name), o.mode) for o in cfg.search.objectives
            if rename.get(o.name, o.name) in ("gain", "forgetting", "target", "retention")]


def analyze_sweep(cfg: SweepConfig, budget_factor: float = 1.5) -> tuple[dict[str, Any], dict[str, Any]]:
    points = sweep_points(sweep.collect(cfg))
    if not points:
        raise ConfigError(f"sweep dir: {cfg.sweep_dir()} has no completed trial to analyse")
    objectives = _objectives(cfg) or list(pareto.DEFAULT_OBJECTIVES)
    result = pareto.frontier_analysis(points, objectives, budget_factor=budget_factor)
    result["progress"] = pareto.hypervolume_progress(points, objectives, result["reference"])
    out = cfg.sweep_dir() / ANALYSIS_DIR
    atomic_write_json(out / "pareto.json", result)
    figs = report.figures(result, result["progress"])
    for name, fig in figs.items():
        atomic_write_bytes(out / "figures" / f"{name}.json", fig.to_json().encode())
    return result, figs


def write_report(cfg: SweepConfig, overlay: str | None = None) -> Path:
    result, figs = analyze_sweep(cfg)
    if overlay:
        model, domain = overlay.split("/", 1)
        _, published_points = published.points(model, domain)
        figs["published"] = report.plane_figure(pareto.frontier_analysis(published_points), "forgetting", "gain",
                                                f"Published reference: {overlay} (SFT, percentage points)",
                                                "forgetting (pp)", "target gain (pp)")
    leaderboard = [{"trial": p["label"], **{k: p[k] for k in ("method", "setting", "params", "target", "retention",
                                                             "gain", "forgetting", "on_front")}}
                   for p in result["points"]]
    sections = {}
    for title, filename in LATER_SECTIONS.items():
        path = cfg.sweep_dir() / ANALYSIS_DIR / filename
        sections[title] = path.read_text() if path.is_file() else ""
    page = report.render(f"PEFT-Arena sweep {cfg.name}", cfg.model_dump(), leaderboard, result, figs, sections)
    path = cfg.sweep_dir() / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def analyze_published(model: str, domain: str, regime: str, out_dir: Path, budget_factor: float = 1.5) -> dict:
    try:
        _, points = published.points(model, domain, regime)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    result = pareto.frontier_analysis(points, budget_factor=budget_factor)
    atomic_write_json(out_dir / f"published-{model}-{domain}-{regime}.json", result)
    return result


def log_outputs(cfg: SweepConfig, paths: list[Path]) -> None:
    if not cfg.tracking.enabled:
        return
    from orchestrator.tracking import Tracker

    try:
        Tracker(cfg).log_sweep_files(paths)
    except Exception as err:  # noqa: BLE001 - the files stay in the sweep dir
        print(f"warning: could not log {', '.join(p.name for p in paths)} to MLflow "
              f"({str(err).splitlines()[0][:160]})")


def summary_lines(result: dict[str, Any]) -> list[str]:
    ref = ", ".join(f"{k} = {v:.4g}" for k, v in result["reference"].items())
    lines = [f"global hypervolume {result['hypervolume']:.5g} (reference {ref}); front: {', '.join(result['front'])}"]
    for method, info in sorted(result["methods"].items(), key=lambda kv: -kv[1]["hypervolume"]):
        lines.append(f"  {method:10s} hypervolume {info['hypervolume']:9.5g}  front {', '.join(info['front'])}")
    for row in result["budget_matched"]:
        lines.append(f"  budget-matched {row['a']} vs {row['b']} (x{row['budget_ratio']:.2f}): {row['dominates']} dominates"
                     if row["dominates"] != "neither" else
                     f"  budget-matched {row['a']} vs {row['b']} (x{row['budget_ratio']:.2f}): neither dominates")
    return lines


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)
