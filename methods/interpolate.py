"""Parameterisation-aware paths between the base model (a = 0) and a trained one (a = 1).

- Additive updates (full FT, LoRA family, VeRA, MiSS, IA3, HRA): W(a) = W0 + a * dW with dW = W1 - W0 on
  the merged weights (the paper's "dense delta"; for IA3 this is exactly W0 * (1 + a (l - 1))).
- Orthogonal updates with a generator (OFT, BOFT): R(a) = Cayley(sqrt(a) * Q). peft builds Q linearly
  from its stored parameter vector, so scaling that vector by sqrt(a) gives peft's own R(sqrt(a) Q) —
  exact Cayley or Cayley-Neumann, whichever the adapter uses — and the path stays a rotation.
- Per-layer factors c_l rescale each transformer layer's update on top of a (SafeScale / MinScale).
HRA is orthogonal but parameterised by Householder vectors with no generator to scale, so it takes the
dense-delta path.
"""
from __future__ import annotations

import copy
import re
from typing import Literal

import torch
from torch import nn

from methods import registry

# trainable tensors that are generators (scaled by sqrt(a) * c_l) and multiplicative scales (1 + a c_l (s - 1))
GENERATORS = {"oft": ("oft_R",), "boft": ("boft_R",)}
SCALES = {"boft": ("boft_s",)}
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
    spec = registry.get(method)
    if path == "dense":
        return False
    if path == "generator" and spec.family not in GENERATORS:
        raise ValueError(f"path: {spec.name} has no generator to scale; allowed: dense")
    return spec.family in GENERATORS


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
        return _generator_path(trained, registry.get(method).family, alpha, layer_factors)
    return _dense_path(trained, base_state, alpha, layer_factors)


def _generator_path(trained: nn.Module, method: str, alpha: float,
                    layer_factors: dict[int, float] | None) -> nn.Module:
    model = copy.deepcopy(trained)
    with torch.no_grad():
        for name, param in model.named_parameters():
            c = _layer_factor(name, layer_factors)
            if any(part in name for part in GENERATORS[method]):
                param.mul_(alpha ** 0.5 * c)  # Q -> sqrt(a) c Q: rotation "energy" |Q|^2 is linear in a
            elif any(part in name for part in SCALES.get(method, ())):
                param.copy_(1.0 + alpha * c * (param - 1.0))
    return model


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
    """rho_l = ||Q_l||_F over all generator tensors of transformer layer l (paper-notes §6.4, §10.7)."""
    spec = registry.get(method)
    parts = GENERATORS.get(spec.family)
    if parts is None:
        raise ValueError(f"method: {spec.name} has no rotation generator; allowed: {', '.join(GENERATORS)}")
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
