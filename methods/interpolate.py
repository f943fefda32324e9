"""Parameterisation-aware paths between the base model (a = 0) and a trained one (a = 1).

Each method's path is stated once, in its registry entry (`MethodSpec.interpolation`):
- the dense delta: W(a) = W0 + a * dW with dW = W1 - W0 on the merged weights (full FT, the LoRA family,
  VeRA, MiSS; for IA3 this is exactly W0 * (1 + a (l - 1)); HRA, whose Householder vectors have no
  generator to scale);
- the generator path (OFT, BOFT): R(a) = Cayley(sqrt(a) * Q). peft builds Q linearly from its stored
  parameter vector, so scaling that vector by sqrt(a) gives peft's own R(sqrt(a) Q) — exact Cayley or
  Cayley-Neumann, whichever the adapter uses — and the path stays a rotation.
Per-layer factors c_l rescale each transformer layer's update on top of a (SafeScale / MinScale).
"""
from __future__ import annotations

import copy
import re
from typing import Literal

import torch
from torch import nn

from methods import registry

_LAYER = re.compile(r"\.layers\.(\d+)\.")

Path = Literal["auto", "generator", "dense"]


def layer_of(name: str) -> int | None:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's weights with any adapter folded in (keys as in the base model)."""
    plain = copy.deepcopy(model)
    if hasattr(plain, "merge_and_unload"):
        plain = plain.merge_and_unload()
    return {k: v.detach() for k, v in plain.state_dict().items()}


def uses_generator(method: str, path: Path = "auto") -> bool:
    rule = registry.get(method).interpolation
    if path == "dense":
        return False
    if path == "generator" and not rule.generators:
        raise ValueError(f"path: {method} has no generator to scale ({rule.why}); allowed: dense")
    return bool(rule.generators)


def _layer_factor(name: str, layer_factors: dict[int, float] | None) -> float:
    """c_l of the parameter's transformer layer: it multiplies the generator Q_l (orthogonal paths) or the
    update dW_l (additive paths), the quantity whose norm is that layer's strength."""
    layer = layer_of(name)
    return (layer_factors or {}).get(layer, 1.0) if layer is not None else 1.0


def interpolate(trained: nn.Module, base_state: dict[str, torch.Tensor], method: str, alpha: float,
                layer_factors: dict[int, float] | None = None, path: Path = "auto") -> nn.Module:
    """A new model at `alpha` in [0, 1] on the method's path; `trained` is left untouched.
    `base_state` is the *original* base model's state dict (PiSSA/MiLoRA keep a residual in their base
    layers, so the wrapped model's frozen weights are not W0)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: {alpha} must be in [0, 1]")
    if uses_generator(method, path):
        return scaled_adapter(trained, registry.get(method).interpolation, alpha, layer_factors)
    return _dense_path(trained, base_state, alpha, layer_factors)


def scaled_adapter(model: nn.Module, rule: registry.Interpolation, alpha: float,
                   layer_factors: dict[int, float] | None = None) -> nn.Module:
    """A copy of an adapter model at `alpha` on its path, as the same kind of adapter: generators scaled by
    sqrt(a) c_l (rotation "energy" |Q|^2 is linear in a), linear tensors by a c_l, scales moved to
    1 + a c_l (s - 1); c_l is the parameter's layer factor."""
    if not rule.as_adapter:
        raise ValueError(f"path: no adapter represents a point of this method ({rule.why}); allowed: merged")
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in moved.named_parameters():
            c = _layer_factor(name, layer_factors)
            if any(part in name for part in rule.generators):
                param.mul_(alpha ** 0.5 * c)
            elif any(part in name for part in rule.linear):
                param.mul_(alpha * c)
            elif any(part in name for part in rule.scales):
                param.copy_(1.0 + alpha * c * (param - 1.0))
    return moved


def _dense_path(trained: nn.Module, base_state: dict[str, torch.Tensor], alpha: float,
                layer_factors: dict[int, float] | None) -> nn.Module:
    plain = copy.deepcopy(trained)
    if hasattr(plain, "merge_and_unload"):
        plain = plain.merge_and_unload()
    with torch.no_grad():
        for name, param in plain.named_parameters():
            w0 = base_state[name].to(param.dtype)
            param.copy_(w0 + alpha * _layer_factor(name, layer_factors) * (param - w0))
    return plain


# ----------------------------------------------------------------------------- layer-wise rescaling


def rotation_strength(model: nn.Module, method: str) -> dict[int, float]:
    """rho_l = ||Q_l||_F over all generator tensors of transformer layer l: the per-layer rotation strength
    that PEFT-Arena's layer-wise OFT rewinding equalises (arXiv 2605.28819, "Interpolation")."""
    parts = registry.get(method).interpolation.generators
    if not parts:
        with_generators = [n for n, s in registry.REGISTRY.items() if s.interpolation.generators]
        raise ValueError(f"method: {method} has no rotation generator; allowed: {', '.join(with_generators)}")
    squares: dict[int, float] = {}
    for name, param in model.named_parameters():
        layer = layer_of(name)
        if layer is not None and any(part in name for part in parts):
            squares[layer] = squares.get(layer, 0.0) + float(param.detach().float().pow(2).sum())
    return {layer: value ** 0.5 for layer, value in sorted(squares.items())}


def update_strength(model: nn.Module, base_state: dict[str, torch.Tensor]) -> dict[int, float]:
    """||dW_l||_F per layer for additive methods: the analogue of rotation strength."""
    squares: dict[int, float] = {}
    for name, weight in merged_state(model).items():
        layer = layer_of(name)
        if layer is not None and name in base_state:
            squares[layer] = squares.get(layer, 0.0) + float((weight.float() - base_state[name].float()).pow(2).sum())
    return {layer: value ** 0.5 for layer, value in sorted(squares.items())}


def equalising_factors(strength: dict[int, float], rule: Literal["safe", "min"], first: int = 5) -> dict[int, float]:
    """Per-layer factors that flatten update strength: layers above the target rho* are scaled down to it,
    layers below are left alone (c_l = min(1, rho*/rho_l)). SafeScale: rho* = mean of the first `first`
    layers; MinScale: rho* = the smallest layer strength."""
    values = list(strength.values())
    target = sum(values[:first]) / len(values[:first]) if rule == "safe" else min(values)
    return {layer: (min(1.0, target / rho) if rho > 0 else 1.0) for layer, rho in strength.items()}
