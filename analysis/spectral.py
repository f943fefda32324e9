"""Weight-space geometry of an update, per 2-D weight, in fp32: PEFT-Arena's retention and adaptation
profiles (Huang et al., arXiv 2605.28819, "Spectral analysis").

For W0 = U S V^T and W_ft = W0 + dW:
- retention profile   r_i = |u_i^T W_ft v_i - s_i|   (how far each pretrained direction's gain moved)
- adaptation profile  a_i = ||dW v_i||               (how much the update acts along each input direction)
- stable rank of dW   ||dW||_F^2 / ||dW||_2^2, and its top singular values
- fluctuation of a profile p: mean |p - MA_5(p)| (5-point moving average, reflect padding)
- intruder dimensions (Shuttleworth et al.): top singular vectors of W_ft whose largest |cos| with every
  pretrained left singular vector is below eps.
Base SVDs are computed once per base model and reused by every trial (a cache keyed by the caller).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BaseSVD:
    u: torch.Tensor   # out x k
    s: torch.Tensor   # k
    vh: torch.Tensor  # k x in


def base_svd(weight: torch.Tensor) -> BaseSVD:
    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    return BaseSVD(u, s, vh)


def moving_average_5(profile: torch.Tensor) -> torch.Tensor:
    padded = F.pad(profile[None, None, :], (2, 2), mode="reflect")[0, 0]
    return padded.unfold(0, 5, 1).mean(dim=1)


def fluctuation(profile: torch.Tensor) -> float:
    """mean |p - MA_5(p)|: how jagged a profile is across the spectrum."""
    if profile.numel() < 5:
        return 0.0
    return float((profile - moving_average_5(profile)).abs().mean())


def profiles(svd: BaseSVD, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(retention, adaptation) profiles from one product dW V:
    r_i = |u_i^T W_ft v_i - s_i| = |u_i^T dW v_i| (u_i^T W0 v_i = s_i), a_i = ||dW v_i||."""
    dv = delta.float() @ svd.vh.T  # out x k: column i is dW v_i
    return (svd.u * dv).sum(dim=0).abs(), dv.norm(dim=0)


def _exact_singular_values(delta: torch.Tensor) -> torch.Tensor:
    """All singular values, descending, from the eigenvalues of the smaller Gram matrix (cheaper than
    `svdvals`, exact at the top; values below ~1e-3 sigma_max read as ~0)."""
    gram = delta @ delta.T if delta.shape[0] <= delta.shape[1] else delta.T @ delta
    return torch.linalg.eigvalsh(gram).flip(0).clamp(min=0).sqrt()


def top_singular_values(delta: torch.Tensor, k: int = 8, tol: float = 1e-3) -> torch.Tensor:
    """The k largest singular values of dW. A randomized SVD (torch.svd_lowrank, 4 power iterations) is
    accepted when every triple's residual max(||dW v - s u||, ||dW^T u - s v||), which bounds the distance
    of s to a true singular value, is below tol * s_1: always for low-rank (LoRA-like) and decaying spectra,
    at a fraction of a full spectrum's cost (which alone made a trial's analysis half as costly as the
    cached base SVDs). Flat spectra fail the check and get the exact values."""
    d = delta.float()
    k = min(k, *d.shape)
    u, s, v = torch.svd_lowrank(d, q=min(k + 10, *d.shape), niter=4)
    u, s, v = u[:, :k], s[:k], v[:, :k]
    residual = torch.maximum((d @ v - u * s).norm(dim=0), (d.T @ u - v * s).norm(dim=0))
    if bool((residual <= tol * s[0]).all()):
        return s
    return _exact_singular_values(d)[:k]


def stable_rank(delta: torch.Tensor, sigma_max: float | None = None) -> float:
    """||dW||_F^2 / ||dW||_2^2."""
    top = float(top_singular_values(delta, 1)[0]) if sigma_max is None else sigma_max
    return float(delta.float().norm()) ** 2 / top ** 2 if top > 0 else 0.0


def intruder_dimensions(svd: BaseSVD, finetuned: torch.Tensor, top_k: int = 10, eps: float = 0.5) -> int:
    """How many of W_ft's top-k left singular vectors have max |cos| < eps with all of W0's. The top-k
    vectors come from a randomized SVD with oversampling and power iterations (torch.svd_lowrank): the
    full SVD of every finetuned weight would cost as much as the (cached) base SVDs themselves."""
    q = min(top_k + 10, *finetuned.shape)
    u_ft = torch.svd_lowrank(finetuned.float(), q=q, niter=6)[0][:, :top_k]
    similarity = (u_ft.T @ svd.u).abs().max(dim=1).values  # unit vectors: dot products are cosines
    return int((similarity < eps).sum())


def module_metrics(svd: BaseSVD, base: torch.Tensor, delta: torch.Tensor, top_singular: int = 8,
                   intruder_k: int = 10, intruder_eps: float = 0.5) -> dict[str, Any]:
    """Every metric of one weight: `svd` is W0's (cached across trials), `base` W0 itself."""
    retention, adaptation = profiles(svd, delta)
    delta_norm = float(delta.float().norm())
    singular = top_singular_values(delta, top_singular) if delta_norm > 0 else torch.zeros(0)
    return {
        "retention_mean": float(retention.mean()), "retention_rel": float(retention.sum() / svd.s.sum()),
        "adaptation_mean": float(adaptation.mean()),
        "retention_fluctuation": fluctuation(retention), "adaptation_fluctuation": fluctuation(adaptation),
        "stable_rank": stable_rank(delta, float(singular[0])) if delta_norm > 0 else 0.0,
        "delta_norm": delta_norm, "delta_rel": delta_norm / float(svd.s.norm()),
        "top_singular": singular.tolist(),
        "intruders": intruder_dimensions(svd, base.float() + delta.float(), intruder_k, intruder_eps),
        "retention_profile": retention.tolist(), "adaptation_profile": adaptation.tolist(),
    }


def deltas(model: torch.nn.Module, base_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """dW per adapted 2-D weight, keyed as in the base model. Additive adapters give it analytically
    (peft's `get_delta_weight`: scale * B A for LoRA, and so on); other methods (OFT, BOFT, HRA, IA3, DoRA)
    and full finetuning by difference of merged weights."""
    out: dict[str, torch.Tensor] = {}
    analytic = True
    for name, module in model.named_modules():
        if not (hasattr(module, "get_delta_weight") and hasattr(module, "lora_A")) or "default" not in module.lora_A:
            continue
        if getattr(module, "use_dora", {}).get("default", False):
            analytic = False  # DoRA's magnitude rescales W0 too: not a pure B A update
            break
        key = name.split("base_model.model.", 1)[-1] + ".weight"
        if key in base_state and module.get_base_layer().weight.shape == base_state[key].shape:
            residual = module.get_base_layer().weight.detach().float() - base_state[key].float()  # PiSSA/MiLoRA
            out[key] = module.get_delta_weight("default").detach().float() + residual
    if out and analytic:
        return out
    from methods.interpolate import merged_state

    merged = merged_state(model)
    return {k: (merged[k].float() - w0.float()) for k, w0 in base_state.items()
            if w0.dim() == 2 and k in merged and not torch.equal(merged[k], w0) and "embed" not in k and "lm_head" not in k}
