"""Parameter counting and budget matching, from a model *config* alone.

`count_trainable` wraps a model built on the meta device (no weights, any size: a 7B model costs seconds
and no memory) with the real peft method and counts its trainable tensors. `analytic_count` is the closed
form of the same number per method (the formulas behind PEFT-Arena's trainable-parameter table, Huang et
al., arXiv 2605.28819); tests hold the two equal.

`model_configs/*.json` beside this file are the architecture configs (transformers `config.json`, no
weights) of the default model and the paper's models, so their budgets resolve offline; any other model is
read from its own config.json, model dir or hub id.
`solve` picks the setting of a method's budget knob (LoRA rank, OFT block size, ...) whose count is
closest to a budget, searching the closed form over every feasible knob value.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from methods import registry

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
MAX_RANK = 1024
# Hub ids whose configs are bundled, so budgets of paper-scale models resolve offline.
BUNDLED = {"Qwen/Qwen2.5-7B": "qwen2.5-7b", "meta-llama/Llama-3.2-3B-Instruct": "llama-3.2-3b",
           "meta-llama/Llama-3.2-3B": "llama-3.2-3b", "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m"}


class BudgetError(ValueError):
    """A budget that no setting of a method meets within the allowed factor."""


@dataclass(frozen=True)
class Linear:
    leaf: str
    in_features: int
    out_features: int


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


def target_linears(model: torch.nn.Module, target_modules: str | list[str] = "all-linear") -> list[Linear]:
    targets = set(registry.resolve_targets(model, target_modules))
    return [Linear(name.rsplit(".", 1)[-1], m.in_features, m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def _full_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters()
               if not any(part in registry.EXCLUDED_FROM_TARGETS for part in name.split(".")))


def analytic_count(linears: list[Linear], method: str, setting: dict[str, Any] | None = None,
                   full_count: int | None = None) -> int:
    """Closed-form trainable count of `method` over the adapted linears (in -> out each)."""
    spec = registry.get(method)
    s = spec.resolve_setting(setting)
    name = spec.family
    if name == "full":
        if full_count is None:
            raise ValueError("full finetuning needs the model's block parameter count")
        return full_count
    total = 0
    for lin in linears:
        i, o = lin.in_features, lin.out_features
        if name in ("lora", "rslora", "pissa", "milora"):
            total += s["r"] * (i + o)
        elif name == "keeplora":
            total += s["r"] * o  # A is frozen at its gradient-based init; only B trains
        elif name == "dora":
            total += s["r"] * (i + o) + o  # + per-output magnitude
        elif name == "adalora":
            total += s["init_r"] * (i + o) + s["init_r"]  # A, B and the singular values E start at init_r
        elif name == "vera":
            total += o + s["r"]  # lambda_b (out) and lambda_d (r); the random projections are frozen
        elif name == "ia3":
            total += i if lin.leaf in registry.FEEDFORWARD_OUT else o
        elif name == "oft":
            b = s["block_size"]
            total += (b * (b - 1) // 2) * (1 if s["block_share"] else i // b)  # skew-symmetric blocks
        elif name == "boft":
            # peft keeps full b x b blocks per butterfly factor, plus a per-output scale. Without its CUDA
            # extension peft silently uses one factor; this is the nominal (GPU) count.
            total += s["butterfly_factor"] * i * s["block_size"] + o
        elif name == "hra":
            total += s["r"] * i  # r Householder vectors in the input space
        elif name == "miss":
            total += s["r"] * o
        else:
            raise ValueError(f"no closed form for {name}")
    return total


def count_trainable(model_config: Any, method: str, setting: dict[str, Any] | None = None,
                    target_modules: str | list[str] = "all-linear") -> int:
    """Trainable parameters of `method` on the config's model, counted on a meta-device model wrapped by
    peft itself. BOFT's peft init cannot run on meta tensors; its count is the closed form (held equal to
    peft's on real weights by the tests)."""
    model = meta_model(model_config)
    if registry.get(method).family == "boft":
        return analytic_count(target_linears(model, target_modules), method, setting)
    with torch.device("meta"):
        wrapped = registry.wrap(model, method, setting, target_modules)
    return registry.count_trainable(wrapped)


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


def candidates(method: str, linears: list[Linear], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every feasible value of the method's budget knob, as settings."""
    spec = registry.get(method)
    knob = spec.budget_knob
    if knob is None:
        return [dict(base)]
    if spec.family in ("oft", "boft"):
        common = set(_divisors(linears[0].in_features))
        for lin in linears[1:]:
            common &= set(_divisors(lin.in_features))
        values = sorted(common)
        if spec.family == "boft":
            factor = spec.resolve_setting(base)["butterfly_factor"]
            values = [b for b in values
                      if all(lin.in_features % (b * 2 ** (factor - 1)) == 0 for lin in linears)]
    elif spec.family == "miss":
        values = [r for r in range(1, MAX_RANK + 1) if all(lin.out_features % r == 0 for lin in linears)]
    else:
        limit = min(MAX_RANK, min(min(lin.in_features, lin.out_features) for lin in linears))
        values = list(range(1, limit + 1))
        if spec.family == "vera":  # VeRA's shared projections make far larger ranks useful
            values = [r for r in range(1, 4097)]
    settings = []
    for value in values:
        setting = {**base, knob: value}
        if "lora_alpha" in spec.defaults and "lora_alpha" not in base:
            setting.pop("lora_alpha", None)
        if spec.family == "adalora":  # the target (final average) rank may not exceed the initial rank
            setting["r"] = min(spec.resolve_setting(base)["r"], value)
        settings.append(setting)
    return settings


def solve(model_config: Any, method: str, budget: float, base: dict[str, Any] | None = None,
          target_modules: str | list[str] = "all-linear", tolerance: float = 2.0) -> Solution:
    """The setting whose exact trainable count is closest to `budget` (ties: the smaller count). Fails
    when even the closest is more than `tolerance` times off: such a budget is a config error."""
    if budget <= 0:
        raise BudgetError(f"budget: {budget:g} must be > 0")
    spec = registry.get(method)
    model = meta_model(model_config)
    linears = target_linears(model, target_modules)
    full = _full_count(model)
    counted = [(analytic_count(linears, spec.name, s, full), s) for s in candidates(spec.name, linears, dict(base or {}))]
    count, setting = min(counted, key=lambda cs: (abs(cs[0] - budget), cs[0]))
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
