"""Driver of `peft-arena analyze SWEEP --geometry`: weight spectra and activation distortion of every
trial's checkpoints, and which metric best predicts forgetting across the sweep.

The metrics are `analysis.spectral` / `analysis.activations` / `analysis.correlate`, the HTML section
`analysis.report.geometry_section`; this module loads checkpoints, caches base SVDs across trials, and
writes `analysis/geometry.json` and `analysis/geometry.html` through the sweep-dir owner.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from analysis import activations, correlate, report, spectral
from evals import scorers, suites
from orchestrator.config import ConfigError, ModelConfig, SweepConfig
from orchestrator.files import atomic_write_bytes, atomic_write_json
from orchestrator.storage.sweep_dir import SweepDir, has_final_point
from orchestrator.trials import checkpoints, models

_SVD_CACHE: dict[tuple[str, str], spectral.BaseSVD] = {}  # (base fingerprint, weight) -> SVD, across trials
SCALARS = ("retention_mean", "retention_rel", "adaptation_mean", "retention_fluctuation", "adaptation_fluctuation",
           "stable_rank", "delta_rel", "intruders")


def clear_svd_cache() -> None:
    _SVD_CACHE.clear()


def base_svd(fingerprint: str, key: str, weight: torch.Tensor) -> spectral.BaseSVD:
    if (fingerprint, key) not in _SVD_CACHE:
        _SVD_CACHE[(fingerprint, key)] = spectral.base_svd(weight)
    return _SVD_CACHE[(fingerprint, key)]


def prompt_batches(cfg: SweepConfig, tokenizer: Any, max_tokens: int) -> list[dict[str, torch.Tensor]]:
    """Retention-suite and target prompts (validation split), cut to `max_tokens` real tokens per kind."""
    batches = []
    for kind in suites.SUITE_KINDS:
        texts = []
        for name in suites.suite_task_names(kind, cfg.eval.suite_refs()[kind]):
            for chunk in suites.task_chunks(suites.load_task(name), tokenizer, "validation", 16):
                texts += [r.get("text") or r.get("prompt") or r.get("context") for r in chunk["requests"]]
        ids, used = [], 0
        for text in texts:
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"][:64]
            if used >= max_tokens:
                break
            ids.append(encoded[: max_tokens - used])
            used += len(ids[-1])
        input_ids, mask = scorers.pad_batch(ids, tokenizer.pad_token_id)
        batches.append({"input_ids": input_ids, "attention_mask": mask})
    return batches


def weight_metrics(trained: torch.nn.Module, base_state: dict[str, torch.Tensor],
                   fingerprint: str) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Spectral metrics of every adapted weight (base SVDs from the cross-trial cache), and the updates."""
    dws = spectral.deltas(trained, base_state)
    return {k: spectral.module_metrics(base_svd(fingerprint, k, base_state[k]), base_state[k], dw)
            for k, dw in dws.items()}, dws


def checkpoint_geometry(cfg: SweepConfig, checkpoint: str, layer_stride: int, max_tokens: int) -> dict[str, Any]:
    trained, tokenizer, meta = checkpoints.load_trained(Path(checkpoint))
    model_cfg = ModelConfig(**meta["model"])
    base, _ = models.load(model_cfg)
    base_state = base.state_dict()
    fingerprint = models.fingerprint(model_cfg)
    began = time.perf_counter()
    modules, dws = weight_metrics(trained, base_state, fingerprint)
    spectral_s = time.perf_counter() - began
    chosen = [k for k in dws if (layer := _layer(k)) is not None and layer % layer_stride == 0]
    batches = prompt_batches(cfg, tokenizer, max_tokens)
    names = [k.removesuffix(".weight") for k in chosen]
    prefix = "base_model.model." if hasattr(trained, "base_model") and hasattr(trained, "peft_config") else ""
    x0 = activations.collect(base.eval(), batches, names)
    h0 = activations.collect(base, batches, names, inputs=True)
    x1 = activations.collect(trained, batches, [prefix + n for n in names])
    for key, name in zip(chosen, names):
        modules[key].update(activations.distortion(x0[name], x1[prefix + name]))
        modules[key].update(activations.csd(h0[name], base_state[key], dws[key]))
    scalar_keys = sorted({k for m in modules.values() for k, v in m.items() if isinstance(v, (int, float))})
    aggregate = {k: sum(m[k] for m in modules.values() if k in m) / max(1, sum(k in m for m in modules.values()))
                 for k in scalar_keys}
    return {"modules": modules, "aggregate": aggregate, "spectral_s": spectral_s, "activation_modules": len(chosen)}


def _layer(key: str) -> int | None:
    from methods.interpolate import layer_of

    return layer_of("." + key)


def analyze(where: SweepDir, all_checkpoints: bool = False, layer_stride: int = 5, max_tokens: int = 256) -> dict:
    cfg = where.load_config()
    results = [r for r in where.collect() if has_final_point(r) and not r.get("duplicate_of")]
    if not results:
        raise ConfigError(f"sweep dir: {where} has no completed trial to analyse")
    rows, examples = [], {}
    for result in results:
        points = result["checkpoints"] if all_checkpoints else result["checkpoints"][-1:]
        for point in points:
            geometry = checkpoint_geometry(cfg, point["path"], layer_stride, max_tokens)
            rows.append({"trial_id": result["trial_id"], "method": result["method"], "step": point["step"],
                         "forgetting": point["forgetting"], "gain": point["gain"], **geometry["aggregate"]})
            examples[result["trial_id"]] = geometry  # the last checkpoint's profiles, for the plots
    metrics = sorted(k for k in rows[0] if k not in ("trial_id", "method", "step", "forgetting", "gain"))
    table = correlate.correlate(rows, metrics)
    by_type = {leaf: correlate.correlate(_rows_for(results, examples, leaf), list(SCALARS))
               for leaf in sorted({k.split(".")[-2] for g in examples.values() for k in g["modules"]})}
    best = correlate.best_predictor(table, "forgetting")
    out = {"rows": rows, "correlations": table, "by_module_type": by_type,
           "best_predictor_of_forgetting": {"metric": best[0], "spearman": best[1]} if best else None,
           "spectral_seconds": [g["spectral_s"] for g in examples.values()]}
    atomic_write_json(where.geometry, out)
    atomic_write_bytes(where.geometry_section, report.geometry_section(out, examples).encode())
    return out


def _rows_for(results: list[dict], examples: dict[str, dict], leaf: str) -> list[dict]:
    """Final-checkpoint rows of one module type (e.g. all layers' down_proj averaged)."""
    rows = []
    for result in results:
        modules = [m for k, m in examples[result["trial_id"]]["modules"].items() if k.split(".")[-2] == leaf]
        rows.append({"forgetting": result["final"]["forgetting"], "gain": result["final"]["gain"],
                     **{s: sum(m[s] for m in modules) / len(modules) for s in SCALARS}})
    return rows
