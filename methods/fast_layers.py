"""Exact, cheaper forwards for two peft adapters whose library forward builds a dense in x in matrix.

peft's BOFT and HRA layers materialise the full rotation of the input space on every forward:
- BOFT (without its CUDA extension) builds `torch.block_diag` of the b x b Cayley blocks and multiplies it
  by two dense in x in permutation matrices per butterfly factor (O(in^3) per layer and step), then
  computes x @ R densely;
- HRA multiplies r Householder reflections into an in x in matrix (r dense rank-1 updates, each kept for
  backward: ~r * in^2 floats per layer) and then W @ H (O(out * in^2)).
That is where their 6x (BOFT) and out-of-memory (HRA) step times come from (bench/README.md). peft has no
option that avoids it on CPU, so these subclasses apply the *same* rotation to the activations instead:
permutations as index gathers, blocks as one batched matmul, Householder products in compact WY form
(Schreiber & Van Loan 1989). Parameters, names, init, merge and checkpoints are peft's own (only the
class of each adapted layer changes), and tests hold the outputs equal to peft's to 1e-5.
"""
from __future__ import annotations

from typing import Any

import torch
from peft.tuners.boft.layer import Linear as BOFTLinear
from peft.tuners.hra.layer import HRALinear
from torch import nn


class _Permute(torch.autograd.Function):
    """x[..., index] for a permutation `index`, with the gradient gathered by the inverse permutation
    (autograd's generic indexing backward scatters with accumulation, a third of BOFT's step time)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(-1, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(-1, inverse), None, None


def _permutations(perm_mats: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Per butterfly factor, gather indices equal to multiplying by its permutation matrix P from the right:
    (x @ P)[..., j] = x[..., P.argmax(0)[j]] and x @ P.T gathers by the inverse, P.argmax(1); None for
    an identity P (peft's single factor), which needs no gather at all."""
    found: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for perm_mat in perm_mats:
        index, inverse = perm_mat.argmax(0), perm_mat.argmax(1)
        identity = bool((index == torch.arange(len(index), device=index.device)).all())
        found.append(None if identity else (index, inverse))
    return found


def _blockwise(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x @ block_diag(*blocks) without building the block-diagonal matrix (blocks: n x b x b)."""
    n, b, _ = blocks.shape
    return torch.einsum("...nb,nbc->...nc", x.reshape(*x.shape[:-1], n, b), blocks).reshape(x.shape)


class BlockwiseBOFTLinear(BOFTLinear):
    """peft's BOFT linear layer with the rotation applied to x factor by factor (see module docstring).

    peft: rotation = M_{m-1} ... M_0 with M_i = P_i diag(R_i) P_i^T, output = base(x @ rotation) * s.
    Here: x @ M_{m-1} @ ... @ M_0, each M_i as gather(P_i), blockwise(R_i), gather(P_i^T)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters or self.merged:
            return super().forward(x, *args, **kwargs)
        previous_dtype = x.dtype
        scale = torch.ones((int(self.out_features), 1), device=x.device, dtype=previous_dtype)
        # peft composes adapters as rotation = M_last @ ... @ M_first, so x meets the last adapter first
        for adapter in reversed([a for a in self.active_adapters if a in self.boft_R.keys()]):
            x = self._rotate(x, adapter)
            scale = self.boft_s[adapter] * scale
        result = self.base_layer(x, *args, **kwargs)
        bias = self.base_layer.bias
        if bias is not None:
            result = result - bias
        result = result * scale.squeeze(-1)
        if bias is not None:
            result = result + bias
        return result.to(previous_dtype)

    def refresh_permutations(self) -> None:
        """Derive the gather indices from peft's permutation matrices (again, if boft_P was replaced)."""
        self.boft_permutations = _permutations(self.boft_P)

    def _rotate(self, x: torch.Tensor, adapter: str) -> torch.Tensor:
        factors, n_blocks, b, _ = self.boft_R[adapter].shape
        blocks = self.cayley_batch(self.boft_R[adapter].view(factors * n_blocks, b, b))
        blocks = self.boft_dropout[adapter](blocks.view(factors, n_blocks, b, b)).to(x.dtype)
        for i in reversed(range(factors)):
            permutation = self.boft_permutations[i]
            if permutation is None:
                x = _blockwise(x, blocks[i])
            else:
                index, inverse = (t.to(x.device) for t in permutation)
                x = _Permute.apply(_blockwise(_Permute.apply(x, index, inverse), blocks[i]), inverse, index)
        return x


class CompactHRALinear(HRALinear):
    """peft's HRA linear layer computing base(x @ H^T) with H = H_1 ... H_r = I - U T U^T (compact WY form,
    T upper triangular with T^-1 = I/2 + strict_upper(U^T U) for unit columns of U), so neither H nor
    W @ H is ever formed: O(tokens * in * r) instead of O(out * in^2), and no in x in tensors saved."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters or self.merged:
            return super().forward(x, *args, **kwargs)
        previous_dtype = x.dtype
        x = x.to(self.get_base_layer().weight.dtype)
        # peft: new_weight = H_first @ ... @ H_last, so x @ new_weight^T meets the last adapter first
        for adapter in reversed([a for a in self.active_adapters if a in self.hra_u.keys()]):
            x = self._reflect(x, adapter)
        return self.base_layer(x, *args, **kwargs).to(previous_dtype)

    def _reflect(self, x: torch.Tensor, adapter: str) -> torch.Tensor:
        u = self.hra_u[adapter]
        if self.hra_apply_GS[adapter]:  # peft: H = I - 2 Q Q^T with Q the Gram-Schmidt basis of U
            q = torch.linalg.qr(u)[0]  # QQ^T does not depend on the columns' signs
            return x - 2 * (x @ q) @ q.T
        u = u / u.norm(dim=0)
        inverse = 0.5 * torch.eye(u.shape[1], dtype=u.dtype, device=u.device) + torch.triu(u.T @ u, diagonal=1)
        t = torch.linalg.solve_triangular(inverse, torch.eye(u.shape[1], dtype=u.dtype, device=u.device),
                                          upper=True)
        return x - ((x @ u) @ t.T) @ u.T  # x @ H^T, H^T = I - U T^T U^T


_FAST = {BOFTLinear: BlockwiseBOFTLinear, HRALinear: CompactHRALinear}


def use_fast_layers(model: nn.Module, batch: dict[str, torch.Tensor] | None = None) -> None:
    """Swap each peft BOFT/HRA linear layer's class for its exact cheaper twin (a `post_init` hook)."""
    del batch  # the swap needs no data
    for module in model.modules():
        fast = _FAST.get(type(module))
        if fast is not None:
            module.__class__ = fast
            if fast is BlockwiseBOFTLinear:
                module.refresh_permutations()
