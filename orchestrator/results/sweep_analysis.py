"""Driver: a sweep dir's trial results -> its front, frontier numbers, figures and the HTML report.

The math is `analysis.pareto`, the HTML `analysis.report`; this module reads the sweep dir, decides what
the sweep's front is (the one definition the sweep table, rewinding and the report share), and writes
`analysis/pareto.json`, `analysis/figures/*.json` and `report.html` through the sweep-dir owner.
"""
from __future__ import annotations

import json
from typing import Any

from analysis import pareto, published, replicates, report
from evals import uncertainty
from methods import registry
from orchestrator.config import ConfigError, OBJECTIVES, SweepConfig, config_hash, lookup
from orchestrator.files import atomic_write_bytes, atomic_write_json
from orchestrator.storage.sweep_dir import Status, SweepDir, TrialDir, has_final_point


def objective_values(result: dict[str, Any]) -> dict[str, float | None]:
    """Every objective a sweep can optimise, read from a trial result (None where it has none)."""
    return {name: lookup(result, spec.result_path) for name, spec in OBJECTIVES.items()}


def points(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One frontier point per completed trial: its final checkpoint's scores and every objective's value."""
    found = []
    for r in results:
        if not has_final_point(r):
            continue
        values = {OBJECTIVES[k].point_key: v for k, v in objective_values(r).items()}
        intervals = {f"{n}_ci": r["final"][f"{n}_ci"] for n in uncertainty.DELTAS if f"{n}_ci" in r["final"]}
        found.append({**values, **intervals, "label": r["trial_id"], "method": r["method"],
                      "configuration": configuration_key(r), "seed": r["config"]["train"]["seed"],
                      "setting": registry.get(r["method"]).display(r["setting"])})
    return found


def configuration_key(result: dict[str, Any]) -> str:
    """Trials that differ only in their seed share this key: they replicate one configuration."""
    spec = result["config"]
    return config_hash({**spec, "train": {k: v for k, v in spec["train"].items() if k != "seed"}})


def objectives(cfg: SweepConfig) -> list[tuple[str, str]]:
    return [(OBJECTIVES[o.name].point_key, o.mode) for o in cfg.search.objectives]


def fixed_reference(cfg: SweepConfig) -> dict[str, float]:
    """The reference values the config fixes (`search.objectives[].reference`), under point names."""
    return {OBJECTIVES[o.name].point_key: o.reference for o in cfg.search.objectives if o.reference is not None}


def reference(cfg: SweepConfig, found: list[dict[str, Any]]) -> dict[str, float]:
    return pareto.default_reference(found, objectives(cfg), fixed_reference(cfg))


def frontier(cfg: SweepConfig, found: list[dict[str, Any]], budget_factor: float = 1.5) -> dict[str, Any]:
    """Fronts and hypervolumes of the sweep's points under the sweep's own objectives and reference."""
    return pareto.frontier_analysis(found, objectives(cfg), fixed_reference(cfg), budget_factor=budget_factor)


def front(cfg: SweepConfig, results: list[dict[str, Any]]) -> list[str]:
    """Trial ids on the Pareto front of the sweep's objectives (completed trials only)."""
    found = points(results)
    return frontier(cfg, found)["front"] if found else []


def story(cfg: SweepConfig, results: list[dict[str, Any]]) -> tuple[dict[str, int], list[float]]:
    """What the sweep's own MLflow run shows: its trials by outcome (and how many reused a duplicate's
    result), and the front's hypervolume after each completed trial, in the order the trials started."""
    counts = {status: sum(r.get("status") == status for r in results)
              for status in (Status.COMPLETED, Status.STOPPED_EARLY, Status.FAILED, Status.ABANDONED)}
    counts["reused"] = sum("duplicate_of" in r for r in results)
    found = points(results)
    if not found:
        return counts, []
    return counts, pareto.hypervolume_progress(found, objectives(cfg), reference(cfg, found))


def analyze(where: SweepDir, budget_factor: float = 1.5) -> tuple[dict[str, Any], dict[str, Any]]:
    """Frontier analysis of a sweep dir, written to analysis/pareto.json and analysis/figures/."""
    cfg = where.load_config()
    found = points(where.collect())
    if not found:
        raise ConfigError(f"sweep dir: {where} has no completed trial to analyse")
    result = frontier(cfg, found, budget_factor)
    result["progress"] = pareto.hypervolume_progress(found, objectives(cfg), result["reference"])
    if len({p["configuration"] for p in found}) < len({(p["configuration"], p["seed"]) for p in found}):
        result["replicates"] = replicates.analyse(found, objectives(cfg), fixed_reference(cfg))
    atomic_write_json(where.pareto, result)
    figs = report.figures(result, result["progress"])
    for name, fig in figs.items():
        atomic_write_bytes(where.figure(name), fig.to_json().encode())
    return result, figs


def write_report(where: SweepDir, overlay: str | None = None) -> Any:
    """report.html: leaderboard, frontier plots, the later analyses' sections, the config."""
    cfg = where.load_config()
    result, figs = analyze(where)
    if overlay:
        model, domain = overlay.split("/", 1)
        _, published_points = published.points(model, domain)
        figs["published"] = report.plane_figure(pareto.frontier_analysis(published_points), "forgetting", "gain",
                                                f"Published reference: {overlay} (SFT, percentage points)",
                                                "forgetting (pp)", "target gain (pp)")
    leaderboard = [{"trial": p["label"], **{k: p.get(k) for k in ("method", "setting", "params", "target", "retention",
                                                                 "gain", "gain_ci", "forgetting", "forgetting_ci",
                                                                 "on_front")}}
                   for p in result["points"]]
    # sections that later analyses write; shown as "not run yet" until their files exist
    later = {"Geometry (weight spectra, activation distortion)": where.geometry_section,
             "Path-wise rewinding": where.rewinding_section}
    sections = {title: (path.read_text() if path.is_file() else "") for title, path in later.items()}
    page = report.render(f"PEFT-Arena sweep {cfg.name}", cfg.model_dump(), leaderboard, result, figs, sections)
    atomic_write_bytes(where.report, page.encode("utf-8"))
    return where.report


def analyze_published(model: str, domain: str, regime: str, out_dir: Any, budget_factor: float = 1.5) -> dict:
    """The paper's own table as fronts and hypervolumes (written to out_dir, not to a sweep dir)."""
    try:
        _, found = published.points(model, domain, regime)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    result = pareto.frontier_analysis(found, budget_factor=budget_factor)
    atomic_write_json(out_dir / f"published-{model}-{domain}-{regime}.json", result)
    return result


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """A trial as one row of summary.json and of the results table."""
    final = result.get("final", {})
    base = result.get("base", {})
    return {"trial": result["trial_id"], "method": result["method"], "status": result["status"],
            "regime": result.get("config", {}).get("train", {}).get("regime", "sft"),
            "setting": registry.get(result["method"]).display(result.get("setting")),
            "trainable_params": result.get("params", {}).get("trainable"),
            "target_base": base.get("target", {}).get("score"), "target": final.get("target"),
            "retention_base": base.get("retention", {}).get("score"), "retention": final.get("retention"),
            "gain": final.get("gain"), "forgetting": final.get("forgetting"),
            "gain_ci": final.get("gain_ci"), "forgetting_ci": final.get("forgetting_ci"),
            "train_s": result["timings"].get("train_s"), "duplicate_of": result.get("duplicate_of"),
            "result": str(TrialDir(result["trial_dir"]).result_path)}


def write_summary(cfg: SweepConfig, results: list[dict[str, Any]], front: list[str] | None = None) -> Any:
    path = SweepDir.of(cfg).summary
    rows = [summary_row(r) | {"on_front": r["trial_id"] in (front or [])} for r in results]
    atomic_write_json(path, {"name": cfg.name, "config": cfg.model_dump(), "front": front or [], "trials": rows})
    return path


def log_outputs(cfg: SweepConfig, paths: list[Any]) -> None:
    """Sweep-level outputs as artifacts of the sweep's MLflow parent run (best effort)."""
    from orchestrator.tracking import mlflow_runs

    mlflow_runs.best_effort(cfg, f"log {', '.join(p.name for p in paths)}", lambda t: t.log_sweep_files(paths))


def summary_lines(result: dict[str, Any]) -> list[str]:
    ref = ", ".join(f"{k} = {v:.4g}" for k, v in result["reference"].items())
    lines = [f"global hypervolume {result['hypervolume']:.5g} (reference {ref}); front: {', '.join(result['front'])}"]
    for method, info in sorted(result["methods"].items(), key=lambda kv: -kv[1]["hypervolume"]):
        lines.append(f"  {method:10s} hypervolume {info['hypervolume']:9.5g}  front {', '.join(info['front'])}")
    for row in result["budget_matched"]:
        verdict = f"{row['dominates']} dominates" if row["dominates"] != "neither" else "neither dominates"
        lines.append(f"  budget-matched {row['a']} vs {row['b']} (x{row['budget_ratio']:.2f}): {verdict}")
    return lines + replicate_lines(result.get("replicates"))


def replicate_lines(analysis: dict[str, Any] | None) -> list[str]:
    """Configuration means over seeds (± the t interval's half-width) and the dominance the seeds support."""
    if not analysis:
        return []
    lines = [f"over seeds: front of configuration means {', '.join(analysis['front'])} "
             f"(hypervolume {analysis['hypervolume']:.5g})"]
    names = [o["name"] for o in analysis["objectives"]]
    for row in analysis["configurations"]:
        values = "  ".join(f"{n} {row[n]:+.4f}" + (f" ± {uncertainty.half_width(row[f'{n}_ci']):.4f}"
                                                  if row[f"{n}_ci"] else "") for n in names)
        lines.append(f"  {row['label']} {row['method']} {row['setting']} ({len(row['seeds'])} seeds): {values}; "
                     f"{replicates.verdict(row)}")
    return lines


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)
