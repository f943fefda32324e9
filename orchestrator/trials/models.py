"""Load a base model and tokenizer: a packaged alias (`orchestrator.trials.assets`: converted once into the
cache, then a 0.5 s safetensors read), a local directory (safetensors only unless pickle is trusted), or a
hub id (needs network).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from orchestrator.config import ConfigError, ModelConfig
from orchestrator.trials.assets import ALIASES, ensure_packaged

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_local_dir(path: Path, trust_pickle: bool) -> None:
    """Refuse what would fail later or run untrusted pickle code: weights load via safetensors only."""
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.name = {str(path)!r}: no config.json there; allowed: a Hugging Face "
                          "model dir, an alias ({}) or a hub id".format(", ".join(ALIASES)))
    files = [p.name for p in path.iterdir()]
    if any(f.endswith(".safetensors") for f in files):
        return
    if any(f.endswith(PICKLE_SUFFIXES) for f in files):
        if not trust_pickle:
            raise ConfigError(f"model.name = {str(path)!r}: only pickle weights (.bin/.pt) found; "
                              "convert them to safetensors, or set model.trust_pickle=true if you trust the source")
        return
    raise ConfigError(f"model.name = {str(path)!r}: the dir has no weights (*.safetensors)")


def resolve(cfg: ModelConfig) -> str:
    """Where transformers should load from: a local path, or the hub id itself."""
    if cfg.name in ALIASES:
        return str(ensure_packaged(cfg.name))
    path = Path(cfg.name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"model.name = {cfg.name!r}: is a file; allowed: a model dir, alias or hub id")
        check_local_dir(path, cfg.trust_pickle)
        return str(path)
    if cfg.name.startswith((".", "/", "~")) or cfg.name.count("/") != 1:
        raise ConfigError(f"model.name = {cfg.name!r}: no such dir; allowed: an alias "
                          f"({', '.join(ALIASES)}), a local model dir, or a hub id like org/name")
    return cfg.name


def fingerprint(cfg: ModelConfig) -> str:
    """Identifies the base weights, for caching base-model scores: the weight files' names and sizes
    (local) or the hub id."""
    source = resolve(cfg)
    path = Path(source)
    parts = [source, cfg.dtype]
    if path.is_dir():
        parts += [f"{p.name}:{p.stat().st_size}" for p in sorted(path.glob("*.safetensors"))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _could_not_load(cfg: ModelConfig, err: OSError) -> ConfigError:
    return ConfigError(f"model.name = {cfg.name!r}: could not load ({str(err).splitlines()[0]})")


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer; it always has a pad token (the EOS when the model defines none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve(cfg))
    except OSError as err:
        raise _could_not_load(cfg, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(cfg: ModelConfig) -> tuple[Any, Any]:
    """(model, tokenizer); the model's pad token is the tokenizer's. Where a GPU is visible the model is put
    on this process's current one: everything but training (which DeepSpeed places) scores the model as
    loaded, and on a GPU node a 7B model scored on the CPU would take days."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":  # read by transformers only at its import
        hf_logging.disable_progress_bar()
    tokenizer = load_tokenizer(cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve(cfg), dtype=getattr(torch, cfg.dtype),
                                                     use_safetensors=not cfg.trust_pickle)
    except OSError as err:
        raise _could_not_load(cfg, err) from None
    model.config.pad_token_id = tokenizer.pad_token_id
    if torch.cuda.is_available():  # scored where it loads (base scores, pool actors, rewinding): on the GPU
        model.to(torch.device("cuda", torch.cuda.current_device()))  # the launcher gave this process
    return model, tokenizer
