"""Checkpoints: how one is written, verified and turned back into a model.

A checkpoint dir holds the trainable tensors (`adapter.safetensors`, adapter-only for PEFT) and the JSON
that vouches for them (`checkpoint.json`: step, loss, lr, method, setting, base model, seed, config hash
and the weights' sha256). Weights are written first and the JSON last, so a crash mid-save leaves a
checkpoint that loading rejects, never a silent one. A rewound point is a checkpoint plus `point.json`,
the scales (alpha, path, per-layer factors) that turn its adapter into the chosen model. A checkpoint
may also hold the state an exact resume needs (`resume.safetensors` + `resume.json`, orchestrator.trials.resume):
optimizer moments and step, RNG and data state; vouched for by its own JSON, written last.

Where checkpoint dirs live in a sweep is `orchestrator.storage.sweep_dir`'s business; this module owns what is
inside one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods import registry
from orchestrator.config import ModelConfig
from orchestrator.files import atomic_write_bytes, atomic_write_json, sha256_file
from orchestrator.storage.sweep_dir import TrialDir
from orchestrator.trials import models

WEIGHTS_FILE = "adapter.safetensors"
META_FILE = "checkpoint.json"
POINT_FILE = "point.json"
RESUME_TENSORS = "resume.safetensors"
RESUME_META = "resume.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or does not match its recorded checksum."""


def save(model: nn.Module, directory: Path, meta: dict[str, Any], zero_stage: int = 0, write: bool = True) -> Path:
    """The model's trainable state (ZeRO-3 partitions gathered first) and its vouching JSON. Under ZeRO-3
    every rank must call it (the gather is collective); only the one with `write` writes."""
    from safetensors.torch import save as to_bytes

    if zero_stage == 3:  # partitioned parameters must be gathered before they can be read
        import deepspeed

        trainable = [p for p in model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            state = registry.trainable_state(model, meta.get("method"))
    else:
        state = registry.trainable_state(model, meta.get("method"))
    if not write:
        return directory
    weights = directory / WEIGHTS_FILE
    atomic_write_bytes(weights, to_bytes(state))
    atomic_write_json(directory / META_FILE, {**meta, "sha256": sha256_file(weights), "tensors": len(state),
                                              "numel": sum(t.numel() for t in state.values())})
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """The checkpoint's JSON alone (step, loss, ...), without reading the weights."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: missing {META_FILE}")
    return json.loads(path.read_text())


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint whose weights match their recorded sha256; else CheckpointError."""
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, meta_path = directory / WEIGHTS_FILE, directory / META_FILE
    if not weights.is_file() or not meta_path.is_file():
        raise CheckpointError(f"checkpoint {directory}: missing {WEIGHTS_FILE} or {META_FILE}")
    meta = json.loads(meta_path.read_text())
    if sha256_file(weights) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} does not match its recorded sha256")
    return load_file(str(weights)), meta


def latest_valid(trial_dir: TrialDir) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint of a trial whose weights verify; corrupt ones are skipped, never used."""
    for directory in reversed(trial_dir.checkpoint_dirs()):
        try:
            state, meta = load(directory)
        except (CheckpointError, ValueError, OSError):
            continue
        return directory, state, meta
    return None


def save_resume(directory: Path, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> int:
    """The exact-resume state next to a checkpoint's weights; returns its size in bytes."""
    from safetensors.torch import save as to_bytes

    blob = to_bytes(tensors)
    atomic_write_bytes(directory / RESUME_TENSORS, blob)
    atomic_write_json(directory / RESUME_META, {**data, "sha256": sha256_file(directory / RESUME_TENSORS),
                                                "bytes": len(blob)})
    return len(blob)


def load_resume(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """A checkpoint's resume state if it is complete and verifies; None otherwise (the trial then resumes
    from the weights alone, and says so)."""
    from safetensors.torch import load_file

    tensors, meta = Path(directory) / RESUME_TENSORS, Path(directory) / RESUME_META
    if not tensors.is_file() or not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    if sha256_file(tensors) != data.get("sha256"):
        return None
    return load_file(str(tensors)), data


def remove_resume(directory: Path) -> None:
    """Drop a checkpoint's resume state (JSON first: a half-removed state is never taken for a whole one)."""
    for name in (RESUME_META, RESUME_TENSORS):
        (Path(directory) / name).unlink(missing_ok=True)


def sizes(directory: Path) -> dict[str, int]:
    """Bytes on disk of a checkpoint: its weights, and its resume state (0 when it has none)."""
    directory = Path(directory)
    resume = directory / RESUME_TENSORS
    return {"weights": (directory / WEIGHTS_FILE).stat().st_size,
            "resume_state": resume.stat().st_size if (directory / RESUME_META).is_file() and resume.is_file() else 0}


def save_point(target: Path, label: str, spec: dict[str, Any]) -> Path:
    """A chosen operating point (a `load_for_eval` spec) kept as a checkpoint dir of its own: the source
    checkpoint's files, if the point has one, then `point.json` (last, as the vouching JSON is)."""
    target.mkdir(parents=True, exist_ok=True)
    if spec.get("checkpoint"):
        for name in (WEIGHTS_FILE, META_FILE):
            shutil.copy2(Path(spec["checkpoint"]) / name, target / name)
        spec = {**spec, "checkpoint": str(target)}
    atomic_write_json(target / POINT_FILE, {"label": label, "spec": spec})
    return target


# ------------------------------------------------------------------------------------------ models


def load_trained(directory: Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint alone: base weights + method wrapper + saved tensors
    (checksum verified). Returns (model in eval mode, tokenizer, the checkpoint's meta)."""
    state, meta = load(directory)
    model_cfg = ModelConfig(**meta["model"])
    model, tokenizer = models.load(model_cfg)
    wrapped = registry.wrap(model, meta["method"], meta["setting"], model_cfg.target_modules, meta["seed"],
                            restore_from=state)
    registry.load_trainable_state(wrapped, state)
    return wrapped.eval(), tokenizer, meta


def resolve_point(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec naming a saved point's dir (no alpha of its own) stands for the point's own spec."""
    if spec.get("checkpoint") and "alpha" not in spec and (Path(spec["checkpoint"]) / POINT_FILE).is_file():
        return json.loads((Path(spec["checkpoint"]) / POINT_FILE).read_text())["spec"]
    return spec


def base_model(spec: dict[str, Any]) -> ModelConfig:
    """The base model a spec builds on, read without loading any weights."""
    spec = resolve_point(spec)
    return ModelConfig(**(read_meta(spec["checkpoint"])["model"] if spec.get("checkpoint") else spec["model"]))


def load_for_eval(spec: dict[str, Any]) -> tuple[nn.Module, Any]:
    """What an evaluation holds, from plain data (it travels to Ray workers): a base model
    ({"model": {...}}), a checkpoint ({"checkpoint": dir}), or a point on the checkpoint's path from the
    base ({"checkpoint": dir, "alpha": a, "path": "auto"|"dense", "layer_factors": {layer: c}}). A rewound
    checkpoint's own `point.json` defines its point."""
    spec = resolve_point(spec)
    if not spec.get("checkpoint"):
        model, tokenizer = models.load(ModelConfig(**spec["model"]))
        return model.eval(), tokenizer
    trained, tokenizer, meta = load_trained(Path(spec["checkpoint"]))
    if spec.get("alpha") is None:
        return trained, tokenizer
    from methods import interpolate

    base, _ = models.load(ModelConfig(**meta["model"]))
    factors = {int(k): v for k, v in (spec.get("layer_factors") or {}).items()}
    moved = interpolate.interpolate(trained, base.state_dict(), meta["method"], spec["alpha"], factors,
                                    spec.get("path", "auto"))
    return moved.eval(), tokenizer
