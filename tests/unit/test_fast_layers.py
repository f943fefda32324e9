"""The registry's BOFT and HRA (exact activation-side forwards) compute exactly what peft's own layers
compute (`boft_peft`, `hra_peft`): outputs and gradients to 1e-5, after training has moved the adapters
away from the identity."""
from __future__ import annotations

import copy

import pytest
import torch

from methods import registry
from methods.fast_layers import BlockwiseBOFTLinear, CompactHRALinear
from tests.helpers import build_tiny_model


def _ids() -> torch.Tensor:
    return torch.randint(2, 300, (2, 10), generator=torch.Generator().manual_seed(5))


def _randomise_adapters(model: torch.nn.Module) -> None:
    """Trained-looking adapters: every trainable tensor moved well off its identity init."""
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))


def _outputs_and_grads(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = _ids()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), grads


@pytest.mark.parametrize("library, fast, setting, fast_class", [
    ("boft_peft", "boft", {"block_size": 4, "butterfly_factor": 1}, BlockwiseBOFTLinear),
    ("boft_peft", "boft", {"block_size": 8, "butterfly_factor": 1}, BlockwiseBOFTLinear),
    ("hra_peft", "hra", {"r": 2}, CompactHRALinear),
    ("hra_peft", "hra", {"r": 7}, CompactHRALinear),
])
def test_fast_variant_matches_peft_outputs_and_gradients(library, fast, setting, fast_class):
    """In float64: the two forwards compute the same function, so they agree far below 1e-5 whatever the
    CPU's float32 kernels round to (in float32, HRA r=7 differed by 1.2e-5 on one logit in 6000)."""
    reference = registry.wrap(build_tiny_model(300).double(), library, setting, "all-linear", seed=3)
    _randomise_adapters(reference)
    variant = registry.wrap(build_tiny_model(300).double(), fast, setting, "all-linear", seed=3)
    registry.load_trainable_state(variant, registry.trainable_state(reference))
    assert sum(isinstance(m, fast_class) for m in variant.modules()) == 14  # 7 projections x 2 layers
    expected, expected_grads = _outputs_and_grads(reference)
    got, got_grads = _outputs_and_grads(variant)
    assert (expected - build_tiny_model(300).double()(input_ids=_ids()).logits).abs().max() > 1e-2  # not the identity
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == expected_grads.keys()
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], atol=1e-5, rtol=1e-4)


def test_hra_fast_matches_peft_with_gram_schmidt():
    from peft import HRAConfig, get_peft_model
    from methods.fast_layers import use_fast_layers

    config = HRAConfig(r=4, target_modules=["q_proj", "down_proj"], apply_GS=True)
    torch.manual_seed(0)
    reference = get_peft_model(build_tiny_model(300), config)
    _randomise_adapters(reference)
    variant = copy.deepcopy(reference)
    use_fast_layers(variant)
    # fp32 logits of order 1: the compact-WY product and peft's dense one round differently, by up to
    # 1.02e-5 on an AVX-512 CPU (the vector width changes the summation order), so 1e-5 failed there by chance
    torch.testing.assert_close(_outputs_and_grads(variant)[0], _outputs_and_grads(reference)[0], atol=5e-5, rtol=1e-5)


def test_boft_fast_applies_every_butterfly_factor_like_peft_gpu_path():
    """peft uses one butterfly factor without its CUDA extension; the variant must still be right for m > 1.
    Reference: peft's own permutations (`block_butterfly_perm`, `perm2mat`) and Cayley blocks, multiplied
    densely as peft's GPU forward does: rotation = M_1 @ M_0, M_i = P_i diag(R_i) P_i^T."""
    model = registry.wrap(build_tiny_model(300), "boft", {"block_size": 4, "butterfly_factor": 1},
                          ["down_proj"], seed=3)
    layer = next(m for m in model.modules() if isinstance(m, BlockwiseBOFTLinear))
    d, b, factors = layer.in_features, 4, 3
    perms = [layer.perm2mat(layer.block_butterfly_perm(d, d // b // 2**i, b // 2, factors - 1)) for i in range(factors)]
    layer.boft_P = torch.stack(perms)
    layer.refresh_permutations()
    assert all(p is not None for p in layer.boft_permutations[1:])  # real permutations, not the identity
    layer.boft_R["default"] = torch.nn.Parameter(0.3 * torch.randn(factors, d // b, b, b))
    blocks = layer.cayley_batch(layer.boft_R["default"].detach().view(-1, b, b)).view(factors, d // b, b, b)
    rotation = torch.eye(d)
    for i in range(factors):
        rotation = perms[i] @ torch.block_diag(*blocks[i]) @ perms[i].T @ rotation
    assert torch.linalg.matrix_norm(rotation.T @ rotation - torch.eye(d)) < 1e-5
    x = torch.randn(3, 5, d)
    expected = layer.base_layer(x @ rotation) * layer.boft_s["default"].squeeze(-1)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_fast_variants_share_the_library_methods_counts_and_merges():
    for library, fast, setting in [("boft_peft", "boft", {"block_size": 4, "butterfly_factor": 1}),
                                   ("hra_peft", "hra", {"r": 3})]:
        reference = registry.wrap(build_tiny_model(300), library, setting, "all-linear", seed=3)
        _randomise_adapters(reference)
        variant = registry.wrap(build_tiny_model(300), fast, setting, "all-linear", seed=3)
        registry.load_trainable_state(variant, registry.trainable_state(reference))
        assert registry.count_trainable(variant) == registry.count_trainable(reference)
        merged_ref = reference.merge_and_unload().state_dict()
        merged_fast = variant.merge_and_unload().state_dict()
        for key, value in merged_ref.items():
            torch.testing.assert_close(merged_fast[key], value, atol=1e-6, rtol=1e-6)
