"""Interpolation paths: base at a=0, the trained model at a=1, rotations stay rotations in between."""
from __future__ import annotations

import pytest
import torch

from methods import interpolate, registry
from tests.helpers import build_tiny_model


def trained(method: str, setting: dict, steps: int = 3):
    """A tiny model wrapped by `method` after a few large SGD steps: a clearly non-zero update."""
    base = build_tiny_model(300)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    ids = torch.randint(2, 300, (4, 16), generator=torch.Generator().manual_seed(0))
    model = registry.wrap(base, method, setting, "all-linear", seed=2, init_batch={"input_ids": ids, "labels": ids})
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), base_state


@pytest.mark.parametrize("method", registry.names())
def test_endpoints_are_base_and_trained(method):
    model, base_state = trained(method, registry.get(method).tiny)
    at0 = interpolate.merged_state(interpolate.interpolate(model, base_state, method, 0.0))
    at1 = interpolate.merged_state(interpolate.interpolate(model, base_state, method, 1.0))
    final = interpolate.merged_state(model)
    assert any(not torch.allclose(final[k], base_state[k]) for k in base_state), "training changed nothing"
    for key, w0 in base_state.items():
        torch.testing.assert_close(at0[key], w0, atol=1e-6, rtol=0)
        torch.testing.assert_close(at1[key], final[key], atol=1e-5, rtol=0)


def _rotations(model):
    return [m.oft_R["default"].get_weight() for m in model.modules() if hasattr(m, "oft_R") and "default" in m.oft_R]


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_exact_cayley_oft_path_stays_orthogonal(alpha):
    model, base_state = trained("oft", {"block_size": 8, "cayley_neumann": False})
    rotations = _rotations(interpolate.interpolate(model, base_state, "oft", alpha))
    assert rotations
    for rotation in rotations:
        eye = torch.eye(rotation.shape[-1]).expand_as(rotation)
        assert (rotation.transpose(-1, -2) @ rotation - eye).abs().max() < 1e-5


def test_oft_generator_is_scaled_by_sqrt_alpha():
    model, base_state = trained("oft", {"block_size": 8})
    half = interpolate.interpolate(model, base_state, "oft", 0.25)
    before = [p for n, p in model.named_parameters() if "oft_R" in n]
    after = [p for n, p in half.named_parameters() if "oft_R" in n]
    for p0, p1 in zip(before, after):
        torch.testing.assert_close(p1, 0.5 * p0)


def test_dense_path_for_oft_differs_from_the_rotation_path_in_between():
    model, base_state = trained("oft", {"block_size": 8, "cayley_neumann": False})
    rot = interpolate.merged_state(interpolate.interpolate(model, base_state, "oft", 0.5))
    dense = interpolate.merged_state(interpolate.interpolate(model, base_state, "oft", 0.5, path="dense"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(rot[key], dense[key], atol=1e-6)
    # a rotation of the input space keeps the singular values; the dense midpoint does not
    s0, s_rot = torch.linalg.svdvals(base_state[key]), torch.linalg.svdvals(rot[key])
    torch.testing.assert_close(s_rot, s0, atol=1e-5, rtol=1e-5)


def test_additive_path_is_linear_in_alpha():
    model, base_state = trained("lora", {"r": 2})
    key = "model.layers.1.mlp.down_proj.weight"
    w = {a: interpolate.merged_state(interpolate.interpolate(model, base_state, "lora", a))[key] for a in (0.0, 0.4, 1.0)}
    torch.testing.assert_close(w[0.4], w[0.0] + 0.4 * (w[1.0] - w[0.0]), atol=1e-6, rtol=0)


def test_layer_factor_zero_restores_that_layer_only():
    model, base_state = trained("lora", {"r": 2})
    out = interpolate.merged_state(interpolate.interpolate(model, base_state, "lora", 1.0, layer_factors={0: 0.0}))
    final = interpolate.merged_state(model)
    key0, key1 = "model.layers.0.self_attn.v_proj.weight", "model.layers.1.self_attn.v_proj.weight"
    assert torch.equal(out[key0], base_state[key0])
    torch.testing.assert_close(out[key1], final[key1], atol=1e-6, rtol=0)


def test_equalising_factors():
    strength = {0: 1.0, 1: 1.0, 2: 2.0, 3: 4.0}
    assert interpolate.equalising_factors(strength, "safe", first=2) == {0: 1.0, 1: 1.0, 2: 0.5, 3: 0.25}
    assert interpolate.equalising_factors({0: 2.0, 1: 1.0, 2: 3.0}, "min") == {0: 0.5, 1: 1.0, 2: 1 / 3}


def test_rotation_strength_per_layer_matches_generator_norms():
    model, _ = trained("oft", {"block_size": 8})
    strength = interpolate.rotation_strength(model, "oft")
    assert sorted(strength) == [0, 1]
    manual = sum(float(p.pow(2).sum()) for n, p in model.named_parameters() if "layers.1." in n and "oft_R" in n) ** 0.5
    assert strength[1] == pytest.approx(manual)
