"""Every registered method starts as the identity, trains only its own tensors, and round-trips."""
from __future__ import annotations

import copy
import os

import pytest
import torch

from methods import registry
from tests.helpers import build_tiny_model

METHODS = registry.names()


def _tiny(method: str) -> dict:
    return registry.get(method).tiny


def _batch(vocab: int) -> torch.Tensor:
    return torch.randint(2, vocab, (2, 12), generator=torch.Generator().manual_seed(1))


def _init_batch() -> dict[str, torch.Tensor]:
    """What gradient-based inits (KeepLoRA) read: a training batch."""
    ids = torch.randint(2, 300, (2, 12), generator=torch.Generator().manual_seed(7))
    return {"input_ids": ids, "labels": ids}


@pytest.mark.parametrize("method", METHODS)
def test_identity_at_init(method):
    base = build_tiny_model(300).eval()
    ids = _batch(300)
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    wrapped = registry.wrap(copy.deepcopy(base), method, _tiny(method), "all-linear",
                            init_batch=_init_batch()).eval()
    with torch.no_grad():
        got = wrapped(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_one_step_changes_only_trainable_tensors_and_round_trips(method):
    model = registry.wrap(build_tiny_model(300), method, _tiny(method), "all-linear", seed=3,
                          init_batch=_init_batch())
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable_before = registry.trainable_state(model)
    assert trainable_before and registry.count_trainable(model) == sum(t.numel() for t in trainable_before.values())
    ids = _batch(300)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):  # two steps: B=0-initialised adapters get a non-zero A-gradient only from step 2
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    after = registry.trainable_state(model)
    assert any(not torch.equal(after[n], trainable_before[n]) for n in after), "nothing trained"
    saved = registry.trainable_state(model, method)  # what a checkpoint holds
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, frozen_before[name]), f"frozen {name} changed"
    # A fresh wrap with the same seed + the checkpoint's tensors reproduces the trained model's outputs,
    # with no data (a data-dependent init is restored from the checkpoint, not re-run).
    fresh = registry.wrap(build_tiny_model(300), method, _tiny(method), "all-linear", seed=3,
                          restore_from=saved)
    registry.load_trainable_state(fresh, saved)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6, rtol=0)


def test_full_finetuning_freezes_embeddings_and_head():
    model = registry.wrap(build_tiny_model(300), "full", {}, "all-linear")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["model.embed_tokens.weight", "lm_head.weight"]


def test_all_linear_resolves_to_the_seven_projections():
    assert registry.resolve_targets(build_tiny_model(300), "all-linear") == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_lora_alpha_defaults_to_twice_the_rank():
    assert registry.get("lora").resolve_setting({"r": 16})["lora_alpha"] == 32
    assert registry.get("lora").resolve_setting({"r": 16, "lora_alpha": 8})["lora_alpha"] == 8


def test_unknown_method_and_setting_are_user_errors():
    with pytest.raises(registry.UnknownMethodError, match="allowed: .*lora"):
        registry.get("lorra")
    with pytest.raises(registry.UnknownMethodError, match="unknown key 'rank'"):
        registry.get("lora").resolve_setting({"rank": 4})


def test_keeplora_trains_only_b_and_starts_off_the_protected_subspace():
    base = build_tiny_model(300)
    w0 = base.model.layers[0].mlp.up_proj.weight.detach().clone()
    model = registry.wrap(base, "keeplora", {"r": 2}, "all-linear", init_batch=_init_batch())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_B" in n for n in trainable)
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    a = layer.lora_A["default"].weight.detach()
    top = torch.linalg.svd(w0, full_matrices=False)[2][: 4 * 2].T  # W0's top-4r right singular vectors
    assert (a @ top).abs().max() < 1e-5  # A has no component in the protected subspace
    torch.testing.assert_close(a @ a.T, torch.eye(2), atol=1e-5, rtol=0)  # rows are orthonormal (V_r^T)


def test_keeplora_needs_a_batch():
    with pytest.raises(ValueError, match="needs a training batch"):
        registry.wrap(build_tiny_model(300), "keeplora", {"r": 2}, "all-linear")


def test_interpolation_rule_is_stated_once_per_method():
    """Rotations with a generator scale it (OFT, BOFT); HRA's Householder vectors have none: dense path."""
    paths = {name: registry.get(name).interpolation.path for name in METHODS}
    assert {n for n, p in paths.items() if p == "generator"} == {"oft", "boft", "boft_peft"}
    assert registry.get("hra").interpolation == registry.get("hra_peft").interpolation
    assert "no generator" in registry.get("hra").interpolation.why


def test_fast_forwards_are_the_default_and_peft_forwards_the_reference():
    from methods.fast_layers import BlockwiseBOFTLinear, CompactHRALinear

    for name, layer in (("boft", BlockwiseBOFTLinear), ("hra", CompactHRALinear)):
        wrapped = registry.wrap(build_tiny_model(300), name, _tiny(name), "all-linear")
        assert sum(isinstance(m, layer) for m in wrapped.modules()) == 14  # 7 projections x 2 layers
        reference = registry.wrap(build_tiny_model(300), f"{name}_peft", _tiny(name), "all-linear")
        assert not any(isinstance(m, layer) for m in reference.modules())


@pytest.mark.parametrize("method,setting,shown", [
    ("lora", {"r": 8, "lora_alpha": 16, "dropout": 0.0}, "r=8"),  # alpha = 2r is implied, dropout hidden
    ("lora", {"r": 8, "lora_alpha": 8, "dropout": 0.0}, "r=8 lora_alpha=8"),
    ("oft", {"block_size": 32, "block_share": False, "cayley_neumann": True}, "block_size=32"),
    ("adalora", {"r": 8, "lora_alpha": 16, "dropout": 0.0, "init_r": 12, "total_step": 40}, "r=8 init_r=12"),
    ("ia3", {}, "-"),
])
def test_tables_show_the_settings_that_tell_trials_apart(method, setting, shown):
    assert registry.get(method).display(setting) == shown


@pytest.mark.parametrize("method", METHODS)
def test_wrapping_leaves_the_compiler_environment_as_it_was(method, monkeypatch):
    """peft's BOFT layers set CC=gcc and CXX=gcc to build a CUDA kernel and, when that fails, never unset
    them; a process that wrapped BOFT then rebuilt DeepSpeed's CPU op with another compiler command than
    every other process (over a minute per rebuild)."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("CXX", "c++")
    registry.wrap(build_tiny_model(300), method, _tiny(method), "all-linear", init_batch=_init_batch())
    assert "CC" not in os.environ and os.environ["CXX"] == "c++"
