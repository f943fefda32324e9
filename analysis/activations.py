"""Activation-space distortion between a base and a finetuned model on the same tokens: PEFT-Arena's
activation-geometry and capability-conditioned drift (CSD) metrics (Huang et al., arXiv 2605.28819,
"Activation space" and "Capability-conditioned drift"). Every metric is a small pure function of activation matrices X0 (base) and X1
(finetuned), one row per token; `collect` gathers them with forward hooks.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

EPS = 1e-12


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x.double() - x.double().mean(dim=0, keepdim=True)


def procrustes_residual(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Relative residual after the best orthogonal alignment of centred X1 onto centred X0
    (R = U V^T from the SVD of X1^T X0): 0 when X1 is a rotation of X0."""
    a, b = _centre(x0), _centre(x1)
    u, _, vh = torch.linalg.svd(b.T @ a, full_matrices=False)
    return float((b @ (u @ vh) - a).norm() / (a.norm() + EPS))


def gram_distortion(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """||G1 - G0||_F / ||G0||_F for the token-by-token cosine Gram matrices."""
    n0, n1 = nn.functional.normalize(x0.double(), dim=1), nn.functional.normalize(x1.double(), dim=1)
    g0, g1 = n0 @ n0.T, n1 @ n1.T
    return float((g1 - g0).norm() / (g0.norm() + EPS))


def linear_cka(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Linear CKA of centred activations: ||X1^T X0||_F^2 / (||X0^T X0||_F ||X1^T X1||_F)."""
    a, b = _centre(x0), _centre(x1)
    return float((b.T @ a).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm() + EPS))


def pca_subspace_distance(x0: torch.Tensor, x1: torch.Tensor, k: int) -> float:
    """Normalised projection distance between the top-k principal subspaces: sqrt(1 - ||P0^T P1||_F^2 / k)."""
    k = min(k, x0.shape[0] - 1, x0.shape[1])
    p0 = torch.linalg.svd(_centre(x0), full_matrices=False)[2][:k].T
    p1 = torch.linalg.svd(_centre(x1), full_matrices=False)[2][:k].T
    return float(max(0.0, 1.0 - float((p0.T @ p1).norm() ** 2) / k) ** 0.5)


def raw_residual(x0: torch.Tensor, x1: torch.Tensor) -> float:
    return float((x1.double() - x0.double()).norm() / (x0.double().norm() + EPS))


def drift(x0: torch.Tensor, x1: torch.Tensor) -> dict[str, float]:
    """Per-token cosine drift (1 - cos), angular drift (radians) and relative norm drift, averaged."""
    cos = nn.functional.cosine_similarity(x0.double(), x1.double(), dim=1).clamp(-1, 1)
    n0, n1 = x0.double().norm(dim=1), x1.double().norm(dim=1)
    return {"cosine_drift": float((1 - cos).mean()), "angular_drift": float(torch.arccos(cos).mean()),
            "norm_drift": float(((n1 - n0).abs() / (n0 + EPS)).mean())}


def csd(h0: torch.Tensor, w0: torch.Tensor, delta: torch.Tensor) -> dict[str, float]:
    """Capability-conditioned drift on base-model inputs h0 (rows): CSD_abs = E||dW h||^2,
    CSD_rel = E||dW h||^2 / (E||W0 h||^2 + eps), CSD_update_norm = E||dW h||^2 / (||dW||_F^2 E||h||^2)."""
    h, d, w = h0.double(), delta.double(), w0.double()
    moved = ((h @ d.T) ** 2).sum(dim=1).mean()
    base = ((h @ w.T) ** 2).sum(dim=1).mean()
    energy = (h ** 2).sum(dim=1).mean()
    return {"csd_abs": float(moved), "csd_rel": float(moved / (base + EPS)),
            "csd_update_norm": float(moved / ((d ** 2).sum() * energy + EPS))}


def distortion(x0: torch.Tensor, x1: torch.Tensor, pca_ks: Iterable[int] = (32, 64), gram_tokens: int = 1024) -> dict[str, float]:
    out = {"procrustes_residual": procrustes_residual(x0, x1), "linear_cka": linear_cka(x0, x1),
           "gram_distortion": gram_distortion(x0[:gram_tokens], x1[:gram_tokens]), "raw_residual": raw_residual(x0, x1),
           **drift(x0, x1)}
    out.update({f"pca_distance_{k}": pca_subspace_distance(x0, x1, k) for k in pca_ks})
    return out


@torch.inference_mode()
def collect(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], names: list[str],
            inputs: bool = False) -> dict[str, torch.Tensor]:
    """Outputs (or inputs) of the named modules over the batches' real (unpadded) tokens, as [tokens, d]."""
    modules = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    mask_holder: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def grab(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            value = args[0] if inputs else output
            captured[name].append(value[mask_holder["mask"]].float().cpu())
        return grab

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    device = next(model.parameters()).device  # the batches are built on the CPU; the model may be on a GPU
    try:
        for batch in batches:
            mask_holder["mask"] = batch["attention_mask"].bool().to(device)
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {n: torch.cat(v) for n, v in captured.items()}
