"""Driver of `peft-arena rewind` (and of a sweep's `rewind.enabled`): build each trial's paths, score them
on the validation split, pick an operating point by a rule, score that point once on the test split, and
keep it as a new checkpoint (the trial's adapter plus the scales that define the point) next to the
trial, and in MLflow as a child of the trial's run.

The paths and selection rules are `analysis.rewind`, the HTML section `analysis.report.rewind_section`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis import report, rewind
from evals import runner
from methods import interpolate, registry
from orchestrator.config import ConfigError, RewindConfig, SweepConfig
from orchestrator.files import atomic_write_bytes, atomic_write_json
from orchestrator.results import sweep_analysis
from orchestrator.storage.sweep_dir import SweepDir, TrialDir, has_final_point
from orchestrator.trials import checkpoints, models, scoring


def make_evaluator(cfg: SweepConfig, scored: dict[tuple[str, str], dict[str, Any]] | None = None) -> Any:
    """evaluate(spec, split) -> {"target": .., "retention": ..} on the sweep's suites: from `scored` (keyed
    by spec key and split) where the pool scored it already, else in this process."""
    def evaluate(spec: dict[str, Any], split: str) -> dict[str, Any]:
        if scored and (runner.spec_key(spec), split) in scored:
            scores = scored[runner.spec_key(spec), split]
        else:
            model, tokenizer = checkpoints.load_for_eval(spec)
            scores = scoring.evaluate(model, tokenizer, cfg.eval, split)
        scoring.take_replies(scores)  # many path points x every item: the rewind record keeps scores only
        return scores
    return evaluate


def score_on_pool(cfg: SweepConfig, points: list[dict], split: str = "validation") -> dict[tuple[str, str], Any]:
    """Every distinct point of every trial scored as one dataset on a Ray Data actor pool (`eval.mode: pool`):
    points in parallel, and each point's weights loaded once by the actor that scores its chunks."""
    specs = list({runner.spec_key(p["spec"]): p["spec"] for p in points}.values())
    tokenizer = models.load_tokenizer(cfg.model)
    refs = cfg.eval.suite_refs()
    scores = runner.evaluate_specs(checkpoints.load_for_eval, tokenizer, specs, refs, split, cfg.eval.max_items,
                                   cfg.eval.batch_size, cfg.eval.pool_size, cfg.eval.cpus_per_actor,
                                   cfg.eval.gpus_per_actor)
    return {(runner.spec_key(spec), split): score for spec, score in zip(specs, scores)}


def _rotates(method: str) -> bool:
    return registry.get(method).interpolation.path == "generator"


def layer_strength(result: dict[str, Any]) -> dict[int, float]:
    final = Path(result["checkpoints"][-1]["path"])
    trained, _, meta = checkpoints.load_trained(final)
    if _rotates(meta["method"]):
        return interpolate.rotation_strength(trained, meta["method"])
    base, _ = checkpoints.load_for_eval({"model": meta["model"]})
    return interpolate.update_strength(trained, base.state_dict())


def path_points(cfg: SweepConfig, result: dict[str, Any], kinds: list[str], alphas: list[float]) -> list[dict]:
    final = result["checkpoints"][-1]["path"]
    points: list[dict] = []
    if "trajectory" in kinds:
        points += rewind.trajectory_points(cfg.model.model_dump(), result["checkpoints"])
    if "interp" in kinds:
        points += rewind.interpolation_points(final, alphas, _rotates(result["method"]))
    if "layerwise" in kinds:
        points += rewind.layerwise_points(final, layer_strength(result))
    return points


def trial_points(cfg: SweepConfig, result: dict[str, Any], kinds: list[str], alphas: list[float]) -> list[dict]:
    """The base, the trial's final checkpoint, then its path points: what rewinding scores for a trial."""
    base_point = {"label": "base", "kind": "base", "spec": {"model": cfg.model.model_dump()}}
    final_point = {"label": "final", "kind": "final", "spec": {"checkpoint": result["checkpoints"][-1]["path"]}}
    return [base_point, final_point] + path_points(cfg, result, kinds, alphas)


def rewind_trial(cfg: SweepConfig, result: dict[str, Any], how: RewindConfig, evaluate: Any = None,
                 points: list[dict] | None = None) -> dict[str, Any]:
    """Score the trial's path points on validation, pick one by `how.select`, score that one on test and
    save it beside the trial (`rewind.json`, `rewound/<point>`)."""
    evaluate = evaluate or make_evaluator(cfg)
    points = points or trial_points(cfg, result, how.paths, how.alpha_values)
    base_point, final_point = points[0], points[1]
    scored = rewind.score_points(points, evaluate)
    base, final = scored[0], scored[1]
    chosen = rewind.select(scored[2:] + [final], final, base, how.select, how.tau, how.delta)  # validation only
    test = evaluate(chosen["spec"], "test")  # the one look at the test split
    last = result["checkpoints"][-1]
    if cfg.eval.split == "test":  # the trial scored its base and final point on the test split already
        test_base, test_final = result["base"], {kind: last[kind] for kind in ("target", "retention")}
    else:
        test_base, test_final = evaluate(base_point["spec"], "test"), evaluate(final_point["spec"], "test")
    record = {"trial_id": result["trial_id"], "trial_dir": result["trial_dir"], "method": result["method"], "rule": how.select,
              "tau": how.tau, "delta": how.delta,
              "kinds": how.paths, "alphas": how.alpha_values, "validation_split": "validation",
              "points": [{k: v for k, v in p.items() if k != "scores"} for p in scored],
              "base": {"target": base["target"], "retention": base["retention"]},
              "final": {"target": final["target"], "retention": final["retention"], "method": result["method"]},
              "chosen": {k: v for k, v in chosen.items() if k != "scores"} | {"method": result["method"]},
              "chosen_test": {"target": test["target"]["score"], "retention": test["retention"]["score"]},
              "test": {"base": test_base, "final": test_final, "chosen": test}}
    trial_dir = TrialDir(result["trial_dir"])
    # the chosen point as a checkpoint of its own: the adapter plus the scales that define the point
    record["checkpoint"] = str(checkpoints.save_point(trial_dir.rewound(chosen["label"]), chosen["label"],
                                                      chosen["spec"]))
    atomic_write_json(trial_dir.rewind_record, record)
    return record


def log_to_mlflow(cfg: SweepConfig, records: list[dict[str, Any]]) -> None:
    from orchestrator.tracking import mlflow_runs

    def log(tracker: Any) -> None:
        for record in records:
            tracker.log_rewind(record)

    mlflow_runs.best_effort(cfg, "log the rewound points", log)


def rewind_sweep(where: SweepDir, trial_ids: list[str] | None, how: RewindConfig) -> dict[str, Any]:
    cfg = where.load_config()
    results = [r for r in where.collect() if has_final_point(r) and r.get("checkpoints")]
    if trial_ids:
        results = [r for r in results if r["trial_id"] in trial_ids]
    else:  # by default: the trials on the sweep's front, each distinct configuration once
        front = set(sweep_analysis.front(cfg, results))
        distinct: dict[str, dict] = {}
        for r in results:
            if r["trial_id"] in front and not r.get("duplicate_of"):
                distinct.setdefault(r["config_hash"], r)
        results = list(distinct.values())
    if not results:
        raise ConfigError("rewind: no completed trial with checkpoints matches")
    points = {r["trial_id"]: trial_points(cfg, r, how.paths, how.alpha_values) for r in results}
    evaluate = make_evaluator(cfg, score_on_pool(cfg, [p for ps in points.values() for p in ps])
                              if cfg.eval.mode == "pool" else None)
    records = [rewind_trial(cfg, r, how, evaluate, points[r["trial_id"]]) for r in results]
    log_to_mlflow(cfg, records)
    summary = {"trials": records, "hypervolume": rewind.hypervolume_before_after(records, records[0]["base"]),
               "test_hypervolume": rewind.test_hypervolume_before_after(records)}
    atomic_write_json(where.rewinding, summary)
    atomic_write_bytes(where.rewinding_section, report.rewind_section(summary).encode())
    return summary
