"""A method is one registry entry: a method added by `registry.register` alone, here peft's LoHa with no
closed-form count, is counted (on the meta device), budget-solved, trained by a real trial, interpolated
and exported, with no other file knowing its name."""
from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, LlamaConfig

from methods import budget, interpolate, registry
from orchestrator import config
from orchestrator.results import export
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import checkpoints, trial
from tests.helpers import build_tiny_model, tiny_config

TINY = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2)
# the tiny model's adapted layers (in, out): q, k, v, o, gate, up, down, in each of its 2 layers
LAYERS = [(32, 32), (32, 16), (32, 16), (32, 32), (32, 64), (32, 64), (64, 32)] * 2
IDS = torch.tensor([[5, 17, 33, 2, 41, 9, 77, 12]])


def _loha(s: dict, targets: list[str]):
    from peft import LoHaConfig

    return LoHaConfig(r=s["r"], alpha=s["alpha"], target_modules=targets)


LOHA = registry.MethodSpec("loha", ("lo_ha",), registry.DENSE, {"r": 8, "alpha": 8}, "r", _loha,
                           "Hadamard product of two low-rank updates", {"r": 2})


def _loha_count(r: int) -> int:
    return sum(2 * r * (i + o) for i, o in LAYERS)  # two (out x r, r x in) pairs per layer


@pytest.fixture
def loha(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    return registry.register(LOHA)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def test_a_method_without_a_closed_form_is_counted_on_the_meta_device_and_budget_solved(loha):
    assert registry.get("LO-HA") is LOHA
    assert budget.count_trainable(TINY, "loha", {"r": 2}) == _loha_count(2)
    assert registry.count_trainable(registry.wrap(build_tiny_model(300), "loha", {"r": 2}, "all-linear")) \
        == _loha_count(2)  # peft's count on real weights
    with pytest.raises(budget.BudgetError, match="loha has no closed-form count"):
        budget.analytic_count(budget.target_linears(budget.meta_model(TINY)), "loha", {"r": 2})
    for target in (1_000, 9_999, 40_000):  # the search bisects: it must still find the nearest rank of all 16
        nearest = min(range(1, 17), key=lambda r: (abs(_loha_count(r) - target), r))
        solution = budget.solve(TINY, "loha", target, tolerance=100)
        assert solution.setting["r"] == nearest and solution.count == _loha_count(nearest)


def test_a_registered_method_trains_interpolates_and_exports(loha, tmp_path, tiny_model_dir, isolated_cache):
    raw = tiny_config(tiny_model_dir, tmp_path / "sweep")
    raw["methods"] = [{"name": "loha", "settings": [{"r": 2}]}]
    cfg = config.validate(raw)
    trial_dir = SweepDir.of(cfg).trial("loha-r2")
    result = trial.run(cfg, "loha", {"r": 2}, trial_dir)
    assert result["status"] == "completed", result.get("traceback")
    assert result["params"]["trainable"] == _loha_count(2) and [c["step"] for c in result["checkpoints"]] == [2, 4]

    step = trial_dir.root / "checkpoints" / "step_000004"
    trained, _, meta = checkpoints.load_trained(step)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    assert (_logits(trained) - _logits(base)).abs().max() > 1e-4  # four steps moved it
    for alpha, expected in ((0.0, base), (1.0, trained)):  # the dense path starts at W0 and ends at W1
        torch.testing.assert_close(_logits(interpolate.interpolate(trained, base_state, "loha", alpha)),
                                   _logits(expected), atol=5e-5, rtol=0)

    record = export.write_point({"checkpoint": str(step)}, tmp_path / "adapter")
    assert record["kind"] == "adapter" and record["method"] == "loha"
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    torch.testing.assert_close(_logits(loaded), _logits(trained), atol=5e-5, rtol=0)
    halfway = export.write_point({"checkpoint": str(step), "alpha": 0.5}, tmp_path / "halfway")
    assert halfway["kind"] == "merged" and "no loha adapter represents a point of its path" in halfway["merged_because"]
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "halfway")),
                               _logits(interpolate.interpolate(trained, base_state, "loha", 0.5)), atol=5e-5, rtol=0)
