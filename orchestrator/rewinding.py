"""Rewind trials of a sweep: build each trial's paths, score them on the validation split, pick an
operating point by a rule, score that point once on the test split, and keep it as a new checkpoint
(the trial's adapter plus the scales that define the point) next to the trial, and in MLflow as a child
of the trial's run."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from analysis import rewind
from methods import interpolate, registry
from orchestrator import trial
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.files import atomic_write_bytes, atomic_write_json, safe_join

REWIND_FILE = "rewind.json"


def make_evaluator(cfg: SweepConfig) -> Any:
    """evaluate(spec, split) -> {"target": .., "retention": ..}, in this process, on the sweep's suites."""
    def evaluate(spec: dict[str, Any], split: str) -> dict[str, Any]:
        model, tokenizer = trial.load_for_eval(spec)
        return trial.evaluate(model, tokenizer, cfg.eval, split)
    return evaluate


def layer_strength(result: dict[str, Any]) -> dict[int, float]:
    final = Path(result["checkpoints"][-1]["path"])
    trained, _, meta = trial.load_trained(final)
    if registry.get(meta["method"]).name in interpolate.GENERATORS:
        return interpolate.rotation_strength(trained, meta["method"])
    base, _ = trial.load_for_eval({"model": meta["model"]})
    return interpolate.update_strength(trained, base.state_dict())


def path_points(cfg: SweepConfig, result: dict[str, Any], kinds: list[str], alphas: list[float]) -> list[dict]:
    final = result["checkpoints"][-1]["path"]
    points: list[dict] = []
    if "trajectory" in kinds:
        points += rewind.trajectory_points(cfg.model.model_dump(), result["checkpoints"])
    if "interp" in kinds:
        points += rewind.interpolation_points(final, alphas, registry.get(result["method"]).name in interpolate.GENERATORS)
    if "layerwise" in kinds:
        points += rewind.layerwise_points(final, layer_strength(result))
    return points


def rewind_trial(cfg: SweepConfig, result: dict[str, Any], kinds: list[str], alphas: list[float], rule: str,
                 tau: float, delta: float, evaluate: Any = None) -> dict[str, Any]:
    evaluate = evaluate or make_evaluator(cfg)
    base_point = {"label": "base", "kind": "base", "spec": {"model": cfg.model.model_dump()}}
    final_point = {"label": "final", "kind": "final", "spec": {"checkpoint": result["checkpoints"][-1]["path"]}}
    scored = rewind.score_points([base_point, final_point] + path_points(cfg, result, kinds, alphas), evaluate)
    base, final = scored[0], scored[1]
    chosen = rewind.select(scored[2:] + [final], final, base, rule, tau, delta)  # validation scores only
    test = evaluate(chosen["spec"], "test")  # the one look at the test split
    record = {"trial_id": result["trial_id"], "method": result["method"], "rule": rule, "tau": tau, "delta": delta,
              "kinds": kinds, "alphas": alphas, "validation_split": "validation",
              "points": [{k: v for k, v in p.items() if k != "scores"} for p in scored],
              "base": {"target": base["target"], "retention": base["retention"]},
              "final": {"target": final["target"], "retention": final["retention"], "method": result["method"]},
              "chosen": {k: v for k, v in chosen.items() if k != "scores"} | {"method": result["method"]},
              "chosen_test": {"target": test["target"]["score"], "retention": test["retention"]["score"]}}
    trial_dir = Path(result["trial_dir"])
    record["checkpoint"] = str(save_rewound(trial_dir, chosen))
    atomic_write_json(trial_dir / REWIND_FILE, record)
    return record


def log_to_mlflow(cfg: SweepConfig, records: list[dict[str, Any]]) -> None:
    if not cfg.tracking.enabled:
        return
    from orchestrator.tracking import Tracker

    try:
        tracker = Tracker(cfg)
        for record in records:
            tracker.log_rewind(record)
    except Exception as err:  # noqa: BLE001 - the rewound checkpoints and records stay on disk
        print(f"warning: could not log rewinding to MLflow ({str(err).splitlines()[0][:160]})")


def save_rewound(trial_dir: Path, chosen: dict) -> Path:
    """The chosen point as a checkpoint: the source adapter files plus `rewind.json` with the scales
    (alpha, path, per-layer factors) that turn it into the chosen model (`trial.load_for_eval`)."""
    target = safe_join(trial_dir, "rewound", re.sub(r"[^A-Za-z0-9._-]+", "_", chosen["label"]))
    spec = chosen["spec"]
    if spec.get("checkpoint"):
        source = Path(spec["checkpoint"])
        target.mkdir(parents=True, exist_ok=True)
        for name in ("adapter.safetensors", "checkpoint.json"):
            shutil.copy2(source / name, target / name)
        spec = {**spec, "checkpoint": str(target)}
    atomic_write_json(target / "rewind.json", {"label": chosen["label"], "spec": spec})
    return target


def rewind_sweep(cfg: SweepConfig, trial_ids: list[str] | None, kinds: list[str], alphas: list[float], rule: str,
                 tau: float, delta: float) -> dict[str, Any]:
    from orchestrator import analyze, sweep

    results = [r for r in sweep.collect(cfg) if r["status"] == "completed" and r.get("checkpoints")]
    if trial_ids:
        results = [r for r in results if r["trial_id"] in trial_ids]
    else:  # by default: the trials on the sweep's front, each distinct configuration once
        front = set(sweep.front(cfg, results))
        distinct: dict[str, dict] = {}
        for r in results:
            if r["trial_id"] in front and not r.get("duplicate_of"):
                distinct.setdefault(r["config_hash"], r)
        results = list(distinct.values())
    if not results:
        raise ConfigError("rewind: no completed trial with checkpoints matches")
    records = [rewind_trial(cfg, r, kinds, alphas, rule, tau, delta) for r in results]
    log_to_mlflow(cfg, records)
    summary = {"trials": records, "hypervolume": rewind.hypervolume_before_after(records, records[0]["base"])}
    atomic_write_json(cfg.sweep_dir() / analyze.ANALYSIS_DIR / "rewind.json", summary)
    atomic_write_bytes(cfg.sweep_dir() / analyze.ANALYSIS_DIR / "rewind.html", section_html(summary).encode())
    return summary


def section_html(summary: dict[str, Any]) -> str:
    """Per trial: target vs retention along the training trajectory and the interpolation path(s), with
    the chosen and final points (the paper's "training vs interpolation" figure); then the numbers."""
    import plotly.graph_objects as go
    import plotly.io as pio

    parts = []
    for record in summary["trials"]:
        fig = go.Figure()
        for kind in sorted({p["kind"] for p in record["points"]} - {"base", "final"}):
            line = [p for p in record["points"] if p["kind"] == kind]
            fig.add_trace(go.Scatter(x=[p["retention"] for p in line], y=[p["target"] for p in line],
                                     mode="lines+markers", name=kind, text=[p["label"] for p in line]))
        for name, point, symbol in (("final", record["final"], "x"), ("chosen", record["chosen"], "star")):
            fig.add_trace(go.Scatter(x=[point["retention"]], y=[point["target"]], mode="markers", name=name,
                                     marker={"symbol": symbol, "size": 14}))
        fig.update_layout(title=f"{record['trial_id']} ({record['method']}): training vs interpolation (validation)",
                          xaxis_title="retention", yaxis_title="target", template="plotly_white", height=420)
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    hv = summary["hypervolume"]
    rows = "".join(f"<tr><td>{r['trial_id']}</td><td>{r['method']}</td><td>{r['final']['target']:.4f} / "
                   f"{r['final']['retention']:.4f}</td><td>{r['chosen']['label']}</td><td>{r['chosen']['target']:.4f} / "
                   f"{r['chosen']['retention']:.4f}</td><td>{r['chosen_test']['target']:.4f} / "
                   f"{r['chosen_test']['retention']:.4f}</td></tr>" for r in summary["trials"])
    head = ("<p>Frontier hypervolume on validation scores: before rewinding <b>{:.5g}</b>, after <b>{:.5g}</b> "
            "(reference {}).</p>").format(hv["before"], hv["after"], hv["reference"])
    table = ("<table><thead><tr><th>trial</th><th>method</th><th>final target / retention</th><th>chosen point</th>"
             "<th>chosen (validation)</th><th>chosen (test, scored once)</th></tr></thead><tbody>" + rows + "</tbody></table>")
    return head + table + "".join(parts)

