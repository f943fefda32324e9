"""A trained model as something other tools load: a standard peft adapter of its method on the original
base weights W0, or merged weights, for a checkpoint and for a point on its interpolation path.

- Most methods are peft adapters already (the exact BOFT/HRA forwards only swap a layer's class, so peft
  saves and loads them as its own BOFT/HRA).
- Methods whose init moves part of W0 into the adapter (`MethodSpec.residual_base`: PiSSA, MiLoRA,
  KeepLoRA) train on a residual base W_res = W0 - s B0 A0; an adapter of theirs is only right on W_res. Their
  update dW = s B A - (W0 - W_res) has rank <= 2r, so it is written as a plain LoRA of rank 2r on W0
  itself, factored by an SVD in float64 (the same conversion peft offers for PiSSA, without needing the
  initial adapter: W0 - W_res is that initial product).
- A point on the path (alpha, per-layer factors) is an adapter of the same method where the registry says
  the path scales tensors of it (`Interpolation.as_adapter`: generators, linear tensors, scales); anything
  else (DoRA, HRA, MiSS, full finetuning, the dense path of a rotation) exists only as merged weights.
"""
from __future__ import annotations

import torch
from torch import nn

from methods import registry

PORTABLE_LORA = registry.LORA_B  # a converted residual-base adapter is a plain LoRA: linear in B


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def _lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}


def _delta(module: nn.Module, w0: torch.Tensor) -> torch.Tensor:
    """dW = s B A + W_res - W0 of one residual-base LoRA layer, in float64."""
    a = module.lora_A["default"].weight.double()
    b = module.lora_B["default"].weight.double()
    residual = module.get_base_layer().weight.double()
    return module.scaling["default"] * (b @ a) + residual - w0.double()


def residual_to_lora(trained: nn.Module, base: nn.Module, rank: int, target_modules: list[str]) -> nn.Module:
    """A plain LoRA (scaling 1) of rank `rank` (2r) on `base`, the original model, whose update equals the
    residual-base model's: B' A' = dW, the top `rank` singular triples of dW (all of them: rank(dW) <= 2r)."""
    from peft import LoraConfig, get_peft_model

    w0 = {name: p for name, p in base.named_parameters()}
    converted = get_peft_model(base, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                                                target_modules=target_modules, init_lora_weights=False))
    targets = _lora_modules(converted)
    with torch.no_grad():
        for name, module in _lora_modules(trained).items():
            key = name.removeprefix("base_model.model.") + ".weight"
            u, s, vh = torch.linalg.svd(_delta(module, w0[key]), full_matrices=False)
            root = s[:rank].sqrt()
            new = targets[name]
            dtype = new.lora_A["default"].weight.dtype
            new.lora_A["default"].weight.copy_((root[:, None] * vh[:rank]).to(dtype))
            new.lora_B["default"].weight.copy_((u[:, :rank] * root).to(dtype))
    return converted.eval()
