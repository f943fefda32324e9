"""Parameter counting and budget matching, from a model *config* alone.

`count_trainable` wraps a model built on the meta device (no weights, any size: a 7B model costs seconds
and no memory) with the real peft method and counts its trainable tensors. `analytic_count` sums the
closed form a method's registry entry names (the formulas behind PEFT-Arena's trainable-parameter table,
Huang et al., arXiv 2605.28819); tests hold the two equal.

`model_configs/*.json` beside this file are the architecture configs (transformers `config.json`, no
weights) of the default model and the paper's models, so their budgets resolve offline; any other model is
read from its own config.json, model dir or hub id.
`solve` picks the setting of a method's budget knob (LoRA rank, OFT block size, ...) whose count is
closest to a budget, over the knob values the method's registry entry allows: by its closed form where the
entry has one, else by counting on the meta device.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from methods import registry

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
# Hub ids whose configs are bundled, so budgets of paper-scale models resolve offline.
BUNDLED = {"Qwen/Qwen2.5-7B": "qwen2.5-7b", "meta-llama/Llama-3.2-3B-Instruct": "llama-3.2-3b",
           "meta-llama/Llama-3.2-3B": "llama-3.2-3b", "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m"}


class BudgetError(ValueError):
    """A budget that no setting of a method meets within the allowed factor."""


@dataclass(frozen=True)
class Solution:
    method: str
    setting: dict[str, Any]
    count: int
    budget: float

    @property
    def ratio(self) -> float:
        return self.count / self.budget


def load_model_config(ref: str) -> Any:
    """A transformers config from a bundled name (model_configs/<ref>.json), a JSON file, a model dir,
    or a hub id (needs network)."""
    from transformers import AutoConfig

    bundled = CONFIG_DIR / f"{BUNDLED.get(ref, ref)}.json"
    path = bundled if bundled.is_file() else Path(ref).expanduser()
    if path.is_file():
        data = json.loads(path.read_text())
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise BudgetError(f"--model: {path} has no model_type; allowed: a transformers config.json")
        return AutoConfig.for_model(model_type, **data)
    allowed = (f"allowed: {', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.json')))}, "
               "a config.json, a model dir or a hub id like org/name")
    if not path.is_dir() and ref.count("/") != 1:
        raise BudgetError(f"--model: {ref!r} is no bundled config, file, dir or hub id; {allowed}")
    try:
        return AutoConfig.from_pretrained(str(path) if path.is_dir() else ref)
    except (OSError, ValueError) as err:
        raise BudgetError(f"--model: cannot read a config from {ref!r} ({str(err).splitlines()[0]}); "
                          f"{allowed}") from None


def meta_model(model_config: Any) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def target_linears(model: torch.nn.Module, target_modules: str | list[str] = "all-linear") -> list[registry.Linear]:
    targets = set(registry.resolve_targets(model, target_modules))
    return [registry.Linear(name.rsplit(".", 1)[-1], m.in_features, m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def analytic_count(linears: list[registry.Linear], method: str, setting: dict[str, Any] | None = None) -> int:
    """The method's closed-form trainable count over the adapted linears (its registry entry's `count`)."""
    spec = registry.get(method)
    if spec.count is None:
        raise BudgetError(f"method: {spec.name} has no closed-form count; count it with count_trainable")
    resolved = spec.resolve_setting(setting)
    return sum(spec.count(lin, resolved) for lin in linears)


def count_trainable(model_config: Any, method: str, setting: dict[str, Any] | None = None,
                    target_modules: str | list[str] = "all-linear") -> int:
    """Trainable parameters of `method` on the config's model, counted on a meta-device model wrapped by
    the registry (peft itself). A method whose wrap cannot run on meta tensors (BOFT's peft init) is
    counted by its entry's closed form, held equal to peft's count on real weights by the tests."""
    model = meta_model(model_config)
    if not registry.get(method).counted_on_meta:
        return analytic_count(target_linears(model, target_modules), method, setting)
    with torch.device("meta"):
        wrapped = registry.wrap(model, method, setting, target_modules)
    return registry.count_trainable(wrapped)


def _counter(model_config: Any, method: str, target_modules: str | list[str],
             linears: list[registry.Linear]) -> Callable[[dict[str, Any]], int]:
    """Counts settings by the entry's closed form where it has one (every knob value in milliseconds),
    else by wrapping a meta-device model per setting (seconds each at 7B)."""
    if registry.get(method).count is not None:
        return lambda setting: analytic_count(linears, method, setting)
    return lambda setting: count_trainable(model_config, method, setting, target_modules)


def _nearest(settings: list[dict[str, Any]], count: Callable[[dict[str, Any]], int], budget: float,
             exhaustive: bool) -> tuple[int, dict[str, Any]]:
    """(count, setting) nearest to `budget` (ties: the smaller count). Without a closed form, counting
    every knob value would wrap a meta model a thousand times, so the search bisects: a method's count
    grows with its knob (more rank, larger blocks), so the nearest lies beside the first setting at or
    over the budget. Each setting is counted once."""
    counted: dict[int, int] = {}

    def at(index: int) -> int:
        if index not in counted:
            counted[index] = count(settings[index])
        return counted[index]

    indices = range(len(settings))
    if not exhaustive:
        first_over = bisect.bisect_left(indices, budget, key=at)
        indices = [i for i in (first_over - 1, first_over) if 0 <= i < len(settings)]
    return min(((at(i), settings[i]) for i in indices), key=lambda cs: (abs(cs[0] - budget), cs[0]))


def solve(model_config: Any, method: str, budget: float, base: dict[str, Any] | None = None,
          target_modules: str | list[str] = "all-linear", tolerance: float = 2.0) -> Solution:
    """The setting whose exact trainable count is closest to `budget` (ties: the smaller count). Fails
    when even the closest is more than `tolerance` times off: such a budget is a config error."""
    if budget <= 0:
        raise BudgetError(f"budget: {budget:g} must be > 0")
    spec = registry.get(method)
    linears = target_linears(meta_model(model_config), target_modules)
    settings = spec.settings_for_budget(linears, dict(base or {}))
    count, setting = _nearest(settings, _counter(model_config, spec.name, target_modules, linears), budget,
                              exhaustive=spec.count is not None)
    if not (budget / tolerance <= count <= budget * tolerance):
        raise BudgetError(f"budget: {budget:g} is out of reach for {spec.name}: the nearest setting "
                          f"{setting or '(none)'} trains {count:,} parameters (allowed within x{tolerance:g})")
    return Solution(spec.name, spec.resolve_setting(setting), count, budget)


def nearest(model_config: Any, method: str, budget: float) -> dict[str, Any]:
    """A method's setting nearest to `budget` whatever the distance, as a table row (`peft-arena budget`)."""
    spec = registry.get(method)
    solution = solve(model_config, spec.name, budget, tolerance=float("inf"))
    knob = spec.budget_knob
    return {"method": spec.name, "knob": knob, "value": solution.setting.get(knob) if knob else None,
            "setting": solution.setting, "trainable": solution.count, "ratio": solution.ratio}
