"""`peft-arena analyze SWEEP --geometry`: weight spectra and activation distortion of every trial's
checkpoints, and which metric best predicts forgetting across the sweep.

Writes `<sweep>/analysis/geometry.json` and the report section `<sweep>/analysis/geometry.html`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import torch

from analysis import activations, correlate, spectral
from evals import scorers, suites
from orchestrator import models, sweep, trial
from orchestrator.config import ConfigError, ModelConfig, SweepConfig
from orchestrator.files import atomic_write_bytes, atomic_write_json

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
        for name in suites.suite_task_names(kind, getattr(cfg.eval, f"{kind}_suite")):
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
    trained, tokenizer, meta = trial.load_trained(Path(checkpoint))
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


def analyze(cfg: SweepConfig, all_checkpoints: bool = False, layer_stride: int = 5, max_tokens: int = 256) -> dict:
    results = [r for r in sweep.collect(cfg) if r["status"] == "completed" and not r.get("duplicate_of")]
    if not results:
        raise ConfigError(f"sweep dir: {cfg.sweep_dir()} has no completed trial to analyse")
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
    atomic_write_json(cfg.sweep_dir() / "analysis" / "geometry.json", out)
    atomic_write_bytes(cfg.sweep_dir() / "analysis" / "geometry.html", section_html(out, examples).encode())
    return out


def _rows_for(results: list[dict], examples: dict[str, dict], leaf: str) -> list[dict]:
    """Final-checkpoint rows of one module type (e.g. all layers' down_proj averaged)."""
    rows = []
    for result in results:
        modules = [m for k, m in examples[result["trial_id"]]["modules"].items() if k.split(".")[-2] == leaf]
        rows.append({"forgetting": result["final"]["forgetting"], "gain": result["final"]["gain"],
                     **{s: sum(m[s] for m in modules) / len(modules) for s in SCALARS}})
    return rows


def section_html(out: dict, examples: dict[str, dict]) -> str:
    """Profiles vs the pretrained spectrum (log axes), stable rank per layer, best metric vs forgetting."""
    figs = []
    profiles = go.Figure()
    for trial_id, geometry in examples.items():
        key = next(k for k in geometry["modules"] if k.endswith("down_proj.weight"))
        profile = geometry["modules"][key]["retention_profile"]
        profiles.add_trace(go.Scatter(x=list(range(1, len(profile) + 1)), y=profile, mode="lines", name=f"{trial_id} {key}"))
    profiles.update_layout(title="Retention profile |u_i^T W_ft v_i - s_i| by singular index (a down_proj)",
                           xaxis_type="log", yaxis_type="log", xaxis_title="singular index i", template="plotly_white")
    figs.append(profiles)
    ranks = go.Figure()
    for trial_id, geometry in examples.items():
        per_layer: dict[int, list[float]] = {}
        for key, metrics in geometry["modules"].items():
            per_layer.setdefault(_layer(key), []).append(metrics["stable_rank"])
        layers = sorted(k for k in per_layer if k is not None)
        ranks.add_trace(go.Scatter(x=layers, y=[sum(per_layer[l]) / len(per_layer[l]) for l in layers], name=trial_id))
    ranks.update_layout(title="Stable rank of dW per layer (mean over modules)", xaxis_title="layer", template="plotly_white")
    figs.append(ranks)
    best = out.get("best_predictor_of_forgetting")
    if best:
        scatter = go.Figure(go.Scatter(x=[r[best["metric"]] for r in out["rows"]], y=[r["forgetting"] for r in out["rows"]],
                                       mode="markers", text=[f"{r['trial_id']} step {r['step']}" for r in out["rows"]]))
        scatter.update_layout(title=f"{best['metric']} vs forgetting (Spearman {best['spearman']:+.2f})",
                              xaxis_title=best["metric"], yaxis_title="forgetting", template="plotly_white")
        figs.append(scatter)
    rows = "".join(f"<tr><td>{m}</td><td>{_fmt(t['forgetting']['spearman'])}</td><td>{_fmt(t['forgetting']['pearson'])}</td>"
                   f"<td>{_fmt(t['gain']['spearman'])}</td><td>{t['forgetting']['n']}</td></tr>"
                   for m, t in out["correlations"].items())
    table = ("<table><thead><tr><th>metric</th><th>Spearman vs forgetting</th><th>Pearson vs forgetting</th>"
             f"<th>Spearman vs gain</th><th>n</th></tr></thead><tbody>{rows}</tbody></table>")
    return table + "".join(pio.to_html(f, full_html=False, include_plotlyjs=False) for f in figs)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"
