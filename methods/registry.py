"""One registry of finetuning methods: name -> MethodSpec, the single source of truth about each method.

A method is data plus a builder: which setting keys it accepts (with defaults), which key a parameter
budget varies and over which values, the closed form of its trainable count, how its update is
interpolated between the base and the trained model, which setting keys tables leave out, a setting small
enough for a tiny test model, and how to wrap a base model for a setting. Adding a method is adding one
entry to REGISTRY: counting, budget solving, training, interpolation and export read everything from it.
Every method peft has is built by peft; full finetuning is the only one with no adapter.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

# Output projections of a transformer MLP across common architectures; IA3 scales their *inputs*
# (peft's `feedforward_modules`), every other IA3 target scales its outputs.
FEEDFORWARD_OUT = ("down_proj", "fc2", "w2", "dense_4h_to_h", "c_proj")
# Never adapted: the token embedding and the LM head (the paper's full-FT count excludes them too).
EXCLUDED_FROM_TARGETS = ("lm_head", "embed_tokens", "embed_out", "wte", "output")
MAX_RANK = 1024  # the largest rank a budget search tries (VeRA's shared projections go further)


class UnknownMethodError(KeyError):
    """A method name (or a setting key) that the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; users should see plain text
        return str(self.args[0])


@dataclass(frozen=True, kw_only=True)
class Interpolation:
    """How a method's update moves from the base model (a = 0) to the trained one (a = 1), the path that
    path-wise rewinding walks (PEFT-Arena, Huang et al., arXiv 2605.28819, "Interpolation").

    With `generators`: those trainable tensors parameterise a rotation R = Cayley(Q) linearly, so scaling
    them by sqrt(a) (times a per-layer factor) gives R(sqrt(a) Q) and the path stays a rotation; `scales`
    are multiplicative output scales moved as 1 + a (s - 1). Without: the dense delta W0 + a (W1 - W0) on
    the merged weights. `linear` names tensors the update is linear in (LoRA's B: dW = s B A), so scaling
    them by a is that dense point as an adapter of the same method; `scales` likewise for IA3's vectors.
    A point of a method with neither can only be written as merged weights."""
    generators: tuple[str, ...] = ()
    scales: tuple[str, ...] = ()
    linear: tuple[str, ...] = ()
    why: str = "the update is additive in the merged weights"

    @property
    def path(self) -> str:
        return "generator" if self.generators else "dense"

    @property
    def as_adapter(self) -> bool:
        """Whether every point of the path is an adapter of the method itself (scaled tensors)."""
        return bool(self.generators or self.linear or self.scales)


DENSE = Interpolation()
LORA_B = Interpolation(linear=("lora_B",), why="dW = s B A is linear in B")


@dataclass(frozen=True)
class Linear:
    """One adapted linear layer as a closed-form count sees it: its leaf name and its shape."""
    leaf: str
    in_features: int
    out_features: int


# The trainable parameters a method adds to one adapted linear layer, for a resolved setting: the closed
# forms behind PEFT-Arena's trainable-parameter table (Huang et al., arXiv 2605.28819), held equal to
# peft's own count by the tests. A method without one is counted on a meta-device model instead.
Count = Callable[[Linear, dict[str, Any]], int]
# The values a parameter budget may give a method's knob on these layers, ascending.
KnobValues = Callable[[list[Linear], dict[str, Any]], list[int]]


def ranks(linears: list[Linear], setting: dict[str, Any]) -> list[int]:
    """A rank is feasible up to the smallest side of any adapted layer."""
    return list(range(1, min([MAX_RANK, *(min(lin.in_features, lin.out_features) for lin in linears)]) + 1))


def _input_block_sizes(linears: list[Linear], setting: dict[str, Any]) -> list[int]:
    """A block-diagonal rotation needs a block size that divides every layer's input width."""
    return [b for b in range(2, min(lin.in_features for lin in linears) + 1)
            if all(lin.in_features % b == 0 for lin in linears)]


def _butterfly_block_sizes(linears: list[Linear], setting: dict[str, Any]) -> list[int]:
    """BOFT's factors double the block span: b * 2^(factors - 1) must divide every input width too."""
    span = 2 ** (setting["butterfly_factor"] - 1)
    return [b for b in _input_block_sizes(linears, setting) if all(lin.in_features % (b * span) == 0 for lin in linears)]


def _output_divisors(linears: list[Linear], setting: dict[str, Any]) -> list[int]:
    """MiSS shares r x r blocks along the output: r must divide every output width."""
    return [r for r in range(1, MAX_RANK + 1) if all(lin.out_features % r == 0 for lin in linears)]


def _vera_ranks(linears: list[Linear], setting: dict[str, Any]) -> list[int]:
    """VeRA's projections are shared and frozen, so ranks well past a layer's width stay useful."""
    return list(range(1, 4097))


def _at_knob(setting: dict[str, Any], knob: str, value: int) -> dict[str, Any]:
    return {**setting, knob: value}


def _adalora_at_knob(setting: dict[str, Any], knob: str, value: int) -> dict[str, Any]:
    """AdaLoRA's target (final average) rank may not exceed the initial rank the budget sets."""
    return {**setting, knob: value, "r": min(setting.get("r", _LORA_DEFAULTS["r"]), value)}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    aliases: tuple[str, ...]
    interpolation: Interpolation
    defaults: dict[str, Any]
    budget_knob: str | None
    build_config: Callable[[dict[str, Any], list[str]], Any] | None
    doc: str
    # a setting small enough for a model of hidden size 32 and MLP size 64 (the tests' tiny model, any
    # quick smoke check): every method must be exercisable without real weights
    tiny: dict[str, Any]
    # setting keys that never change what a table reader compares (dropout, schedule lengths, numerics)
    hidden: tuple[str, ...] = ()
    # the init moves part of W0 into the adapter (PiSSA, MiLoRA, KeepLoRA): the frozen base is the residual
    # W0 - s B0 A0, so a portable adapter is the plain LoRA s (B A - B0 A0) on W0 itself
    residual_base: bool = False
    extra_keys: tuple[str, ...] = field(default=())
    post_init: Callable[[nn.Module, dict[str, torch.Tensor] | None], None] | None = None  # inits peft lacks
    # frozen tensors a data-dependent init creates; checkpoints store them so that a checkpoint alone
    # rebuilds the model (`restore` puts them back instead of re-running the init)
    init_state: tuple[str, ...] = ()
    restore: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None
    count: Count | None = None  # the closed form per adapted layer; None: counted on a meta-device model
    counted_on_meta: bool = True  # False: the wrap cannot run on meta tensors (BOFT's peft init); `count` counts
    knob_values: KnobValues = ranks
    at_knob: Callable[[dict[str, Any], str, int], dict[str, Any]] = _at_knob  # the setting at a knob value
    # the setting key that must hold the trial's number of optimiser steps (AdaLoRA's rank schedule)
    run_length_key: str | None = None

    def display(self, setting: dict[str, Any] | None) -> str:
        """A setting as tables show it: `r=8`, `block_size=32`; "-" when nothing is left to show. Hidden
        keys are left out, and so is a derived key at its derived value (lora_alpha = 2r)."""
        setting = dict(setting or {})
        shown = {k: v for k, v in setting.items() if k not in self.hidden and not self._derived(setting, k)}
        return " ".join(f"{k}={v}" for k, v in shown.items()) or "-"

    def _derived(self, setting: dict[str, Any], key: str) -> bool:
        if key != "lora_alpha":
            return False
        rest = {k: v for k, v in setting.items() if k != key and k in self.defaults}
        return self.resolve_setting(rest)[key] == setting[key]

    def resolve_setting(self, setting: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with the user's setting; unknown keys are a user error naming the allowed ones."""
        setting = dict(setting or {})
        allowed = set(self.defaults) | set(self.extra_keys)
        unknown = sorted(set(setting) - allowed)
        if unknown:
            raise UnknownMethodError(
                f"methods.{self.name}.setting: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}"
            )
        for key, value in setting.items():  # the defaults' types are the settings' types
            default = self.defaults.get(key)
            if default is not None and not _same_kind(default, value):
                raise UnknownMethodError(f"methods.{self.name}.setting.{key} = {value!r}: must be "
                                         f"{type(default).__name__} (like the default {default!r})")
        resolved = {**self.defaults, **setting}
        if "lora_alpha" in self.defaults and "lora_alpha" not in setting:
            resolved["lora_alpha"] = 2 * resolved["r"]  # the paper's recipe: alpha = 2r
        return resolved

    def for_run(self, setting: dict[str, Any] | None, steps: int) -> dict[str, Any]:
        """The resolved setting a trial of `steps` optimiser steps trains with."""
        resolved = self.resolve_setting(setting)
        if self.run_length_key:
            resolved[self.run_length_key] = steps
        return resolved

    def settings_for_budget(self, linears: list[Linear], base: dict[str, Any]) -> list[dict[str, Any]]:
        """Every setting a parameter budget may pick on these layers, in ascending knob order."""
        if self.budget_knob is None:
            return [dict(base)]
        values = self.knob_values(linears, self.resolve_setting(base))
        return [self.at_knob(base, self.budget_knob, value) for value in values]

    def portable_rank(self, setting: dict[str, Any]) -> int:
        """The rank of the plain LoRA on W0 that a residual-base adapter exports as: s (B A - B0 A0) is
        the difference of two rank-r products."""
        return 2 * self.resolve_setting(setting)["r"]


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return isinstance(value, type(default))


def _lora(**flags: Any) -> Callable[[dict[str, Any], list[str]], Any]:
    def build(s: dict[str, Any], targets: list[str]) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=s["r"], lora_alpha=s["lora_alpha"], lora_dropout=s["dropout"],
                          target_modules=targets, **flags)

    return build


def _adalora(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import AdaLoraConfig

    return AdaLoraConfig(init_r=s["init_r"], target_r=s["r"], lora_alpha=s["lora_alpha"],
                         total_step=s["total_step"], lora_dropout=s["dropout"], target_modules=targets)


def _vera(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import VeraConfig

    return VeraConfig(r=s["r"], target_modules=targets, vera_dropout=s["dropout"])


def _ia3(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import IA3Config

    feedforward = [t for t in targets if t in FEEDFORWARD_OUT]
    return IA3Config(target_modules=targets, feedforward_modules=feedforward)


def _oft(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import OFTConfig

    return OFTConfig(r=0, oft_block_size=s["block_size"], block_share=s["block_share"],
                     use_cayley_neumann=s["cayley_neumann"], target_modules=targets)


def _boft(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import BOFTConfig

    return BOFTConfig(boft_block_size=s["block_size"], boft_n_butterfly_factor=s["butterfly_factor"],
                      target_modules=targets)


def _hra(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import HRAConfig

    return HRAConfig(r=s["r"], target_modules=targets)


def _miss(s: dict[str, Any], targets: list[str]) -> Any:
    from peft import MissConfig

    return MissConfig(r=s["r"], target_modules=targets, miss_dropout=s["dropout"])


def _fast_layers(model: nn.Module, batch: dict[str, torch.Tensor] | None = None) -> None:
    from methods.fast_layers import use_fast_layers  # imports peft: kept out of the registry's import

    use_fast_layers(model, batch)


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]


def _minor_components_init(model: nn.Module, batch: dict[str, torch.Tensor] | None = None) -> None:
    """MiLoRA (Wang et al., NAACL 2025): peft has no such init, so this mirrors peft's own `pissa_init` with
    the r *smallest* singular components of W instead of the largest: A = sqrt(S_r) V_r^T, B = U_r sqrt(S_r)
    (S_r divided by the LoRA scale), and the frozen base becomes W - scale * B A, so the model is exactly
    the base model at step 0."""
    for module in _lora_layers(model):
        base = module.get_base_layer()
        if base.weight.device.type == "meta":  # parameter counting on a meta model: nothing to initialise
            continue
        r, scale = module.r["default"], module.scaling["default"]
        weight = base.weight.data.float()
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        s_r = s[-r:] / scale
        lora_a = torch.diag(torch.sqrt(s_r)) @ vh[-r:]
        lora_b = u[:, -r:] @ torch.diag(torch.sqrt(s_r))
        module.lora_A["default"].weight.data = lora_a.to(base.weight.dtype)
        module.lora_B["default"].weight.data = lora_b.to(base.weight.dtype)
        base.weight.data = (weight - scale * lora_b @ lora_a).to(base.weight.dtype)


KEEPLORA_B0 = "keeplora_b0"


def _keeplora_init(model: nn.Module, batch: dict[str, torch.Tensor] | None) -> None:
    """KeepLoRA (Luo 2026, as PEFT-Arena re-implements it, arXiv 2605.28819), which peft does not have: take the first-step gradient G of
    each adapted W0 on a training batch, project out W0's top-(4r) right singular subspace (the directions
    that carry pretrained knowledge), and set B = U_r S_r, A = V_r^T from the rank-r SVD of what is left.
    A is frozen; only B trains. As for PiSSA, the base becomes W0 - scale * B A so step 0 is the identity."""
    _freeze_lora_a(model)
    layers = [m for m in _lora_layers(model) if m.get_base_layer().weight.device.type != "meta"]
    if not layers:  # a meta model (parameter counting): shapes and trainability are all that matter
        return
    if batch is None:
        raise ValueError("keeplora: its init needs a training batch (input_ids, labels)")
    weights = [m.get_base_layer().weight for m in layers]
    for w in weights:
        w.requires_grad_(True)
    with model.disable_adapter():  # the batch is collated on the CPU; the model may be on a GPU
        model(**{k: v.to(weights[0].device) for k, v in batch.items()}).loss.backward()
    for module, weight in zip(layers, weights):
        grad = weight.grad.float()
        weight.grad = None
        weight.requires_grad_(False)
        r = module.r["default"]
        vh = torch.linalg.svd(weight.data.float(), full_matrices=False)[2]
        top = vh[: 4 * r].T  # in x 4r: the protected right singular directions of W0
        residual = grad - (grad @ top) @ top.T
        u, s, vh_g = torch.linalg.svd(residual, full_matrices=False)
        lora_b, lora_a = u[:, :r] * s[:r], vh_g[:r]
        _set_keeplora(module, lora_a, lora_b, lora_b)
    _freeze_lora_a(model)  # peft's disable_adapter() marks every adapter tensor trainable again on exit


def _freeze_lora_a(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        if "lora_A" in name:
            param.requires_grad_(False)


def _set_keeplora(module: nn.Module, lora_a: torch.Tensor, lora_b0: torch.Tensor, lora_b: torch.Tensor) -> None:
    """Install A (frozen), the trained B, and the residual base W0 - scale * B0 A from the initial B0."""
    base = module.get_base_layer()
    dtype, device = base.weight.dtype, base.weight.device  # a checkpoint's tensors load on the CPU
    lora_a, lora_b0, lora_b = (t.to(device) for t in (lora_a, lora_b0, lora_b))
    if KEEPLORA_B0 not in module._buffers:  # first install: base.weight still holds W0
        module.register_buffer(KEEPLORA_B0, lora_b0.to(dtype).clone())
        base.weight.data = (base.weight.data.float() - module.scaling["default"] * lora_b0 @ lora_a).to(dtype)
    module.lora_A["default"].weight.data = lora_a.to(dtype).contiguous()
    module.lora_B["default"].weight.data = lora_b.to(dtype).contiguous()


def _keeplora_restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Rebuild a KeepLoRA model from a checkpoint: no gradient, no data, just the stored A, B0 and B."""
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            _set_keeplora(module, state[f"{name}.lora_A.default.weight"], state[f"{name}.{KEEPLORA_B0}"],
                          state[f"{name}.lora_B.default.weight"])
    _freeze_lora_a(model)


def _lora_count(lin: Linear, s: dict[str, Any]) -> int:
    return s["r"] * (lin.in_features + lin.out_features)


def _keeplora_count(lin: Linear, s: dict[str, Any]) -> int:
    return s["r"] * lin.out_features  # A is frozen at its gradient-based init; only B trains


def _dora_count(lin: Linear, s: dict[str, Any]) -> int:
    return _lora_count(lin, s) + lin.out_features  # + the per-output magnitude


def _adalora_count(lin: Linear, s: dict[str, Any]) -> int:
    return s["init_r"] * (lin.in_features + lin.out_features + 1)  # A, B and the singular values E, at init_r


def _vera_count(lin: Linear, s: dict[str, Any]) -> int:
    return lin.out_features + s["r"]  # lambda_b (out) and lambda_d (r); the random projections are frozen


def _ia3_count(lin: Linear, s: dict[str, Any]) -> int:
    return lin.in_features if lin.leaf in FEEDFORWARD_OUT else lin.out_features


def _oft_count(lin: Linear, s: dict[str, Any]) -> int:
    b = s["block_size"]
    return (b * (b - 1) // 2) * (1 if s["block_share"] else lin.in_features // b)  # skew-symmetric blocks


def _boft_count(lin: Linear, s: dict[str, Any]) -> int:
    """peft keeps full b x b blocks per butterfly factor, plus a per-output scale. Without its CUDA
    extension peft silently uses one factor; this is the nominal (GPU) count."""
    return s["butterfly_factor"] * lin.in_features * s["block_size"] + lin.out_features


def _hra_count(lin: Linear, s: dict[str, Any]) -> int:
    return s["r"] * lin.in_features  # r Householder vectors in the input space


def _miss_count(lin: Linear, s: dict[str, Any]) -> int:
    return s["r"] * lin.out_features


_LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "dropout": 0.0}
_LORA_HIDDEN = ("dropout",)
_BOFT = MethodSpec("boft", (), Interpolation(generators=("boft_R",), scales=("boft_s",),
                                                why="Cayley generators per block"),
                   {"block_size": 4, "butterfly_factor": 2}, "block_size", _boft,
                   "butterfly-factorised orthogonal rotation (exact activation-side forward)",
                   {"block_size": 4, "butterfly_factor": 1}, post_init=_fast_layers, count=_boft_count,
                   counted_on_meta=False, knob_values=_butterfly_block_sizes)
_HRA = MethodSpec("hra", (),
                  Interpolation(why="Householder vectors parameterise the rotation with no generator to scale"),
                  {"r": 8}, "r", _hra, "product of Householder reflections (exact compact-WY forward)", {"r": 2},
                  post_init=_fast_layers, count=_hra_count)


def _peft_forward(spec: MethodSpec) -> MethodSpec:
    """`<name>_peft`: the same adapter with peft's own forward, which builds the in x in rotation on every
    step (6x slower for BOFT, out of memory for HRA at real sizes): the reference the fast forward is held
    equal to."""
    return dataclasses.replace(spec, name=f"{spec.name}_peft", aliases=(), post_init=None,
                               doc=f"{spec.name} with peft's own forward (reference; slow)")


REGISTRY: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(spec: MethodSpec) -> MethodSpec:
    """Make a method known under its name and aliases: the one step that adds a method."""
    REGISTRY[spec.name] = spec
    _ALIASES.update({_normalise(alias): spec.name for alias in (spec.name, *spec.aliases)})
    return spec


for _spec in (
    MethodSpec("full", ("full_ft", "fullft", "full_finetuning"), DENSE, {}, None, None,
               "every weight of the transformer blocks; embeddings and LM head frozen", {}),
    MethodSpec("lora", (), LORA_B, _LORA_DEFAULTS, "r", _lora(), "W0 + (alpha/r) B A", {"r": 2},
               hidden=_LORA_HIDDEN, count=_lora_count),
    MethodSpec("rslora", ("rs_lora",), LORA_B, _LORA_DEFAULTS, "r", _lora(use_rslora=True),
               "LoRA scaled by alpha/sqrt(r)", {"r": 3}, hidden=_LORA_HIDDEN, count=_lora_count),
    MethodSpec("dora", (), Interpolation(why="the magnitude renormalises W0 + s B A: not linear in B"),
               _LORA_DEFAULTS, "r", _lora(use_dora=True),
               "LoRA with a learned per-output magnitude", {"r": 2}, hidden=_LORA_HIDDEN, count=_dora_count),
    MethodSpec("pissa", (), LORA_B, _LORA_DEFAULTS, "r", _lora(init_lora_weights="pissa"),
               "LoRA initialised from the principal singular components (residual kept frozen)", {"r": 2},
               hidden=_LORA_HIDDEN, residual_base=True, count=_lora_count),
    MethodSpec("milora", ("mi_lora",), LORA_B, _LORA_DEFAULTS, "r", _lora(),
               "LoRA initialised from the minor singular components (residual kept frozen)", {"r": 2},
               hidden=_LORA_HIDDEN, post_init=_minor_components_init, residual_base=True, count=_lora_count),
    MethodSpec("keeplora", ("keep_lora",), LORA_B, _LORA_DEFAULTS, "r", _lora(),
               "gradient-based LoRA init off the top singular subspace of W0; A frozen, B trains", {"r": 2},
               hidden=_LORA_HIDDEN, post_init=_keeplora_init, init_state=("lora_A", KEEPLORA_B0),
               restore=_keeplora_restore, residual_base=True, count=_keeplora_count),
    MethodSpec("adalora", (), Interpolation(linear=("lora_E",), why="dW = s B (E * A) is linear in E"),
               {**_LORA_DEFAULTS, "init_r": 12, "total_step": 1000}, "init_r",
               _adalora, "LoRA with SVD-based rank reallocation (starts at init_r, ends near r)",
               {"r": 2, "init_r": 5}, hidden=(*_LORA_HIDDEN, "total_step"), count=_adalora_count,
               at_knob=_adalora_at_knob, run_length_key="total_step"),
    MethodSpec("vera", (), Interpolation(linear=("vera_lambda_b",), why="dW = Lb B Ld A is linear in Lb"),
               {"r": 256, "dropout": 0.0}, "r", _vera,
               "shared frozen random projections, trained scaling vectors", {"r": 4}, hidden=("dropout",),
               count=_vera_count, knob_values=_vera_ranks),
    MethodSpec("ia3", (), Interpolation(scales=("ia3_l",), why="W0 * (1 + a (l - 1)) is exactly the dense delta"),
               {}, None, _ia3, "learned rescaling vectors", {}, count=_ia3_count),
    MethodSpec("oft", (), Interpolation(generators=("oft_R",), why="Cayley generators per block"),
               {"block_size": 32, "block_share": False, "cayley_neumann": True}, "block_size", _oft,
               "block-diagonal orthogonal rotation R = Cayley(Q) of the input space", {"block_size": 8},
               hidden=("block_share", "cayley_neumann"), count=_oft_count, knob_values=_input_block_sizes),
    _BOFT,
    _peft_forward(_BOFT),
    _HRA,
    _peft_forward(_HRA),
    MethodSpec("miss", ("bone",), DENSE, {"r": 64, "dropout": 0.0}, "r", _miss, "shared-block additive update",
               {"r": 4}, hidden=("dropout",), count=_miss_count, knob_values=_output_divisors),
):
    register(_spec)


def names() -> list[str]:
    return sorted(REGISTRY)


def get(name: str) -> MethodSpec:
    key = _normalise(name)
    if key not in _ALIASES:
        raise UnknownMethodError(f"method: unknown method {name!r}; allowed: {', '.join(names())}")
    return REGISTRY[_ALIASES[key]]


def resolve_targets(model: nn.Module, target_modules: str | list[str]) -> list[str]:
    """Leaf names of the linear layers to adapt. 'all-linear' is resolved here rather than by peft so that
    every method (IA3's feedforward split, parameter counting) sees the same concrete list."""
    if target_modules != "all-linear":
        return list(target_modules)
    found: list[str] = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and leaf not in EXCLUDED_FROM_TARGETS and leaf not in found:
            found.append(leaf)
    return found


@contextmanager
def _compiler_environment_kept() -> Iterator[None]:
    """peft's BOFT layers try to build a CUDA kernel with CC=gcc and CXX=gcc set in os.environ, and when the
    build fails (any machine without CUDA) they never restore them: the process and everything it starts
    then compile with `gcc`, so DeepSpeed's CPU communication op, cached per compiler command, is rebuilt
    (over a minute) each time a process with the other compiler meets it. Kept as it was here."""
    saved = {key: os.environ.get(key) for key in ("CC", "CXX")}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wrap(model: nn.Module, method: str, setting: dict[str, Any] | None, target_modules: str | list[str],
         seed: int = 0, init_batch: dict[str, torch.Tensor] | None = None,
         restore_from: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The base model made trainable by `method`. Seeded so that random inits (VeRA's projections, LoRA's A)
    are reproducible: a checkpoint holds only trainable tensors (plus a data-dependent init's frozen ones),
    and reloading re-creates the frozen rest. `init_batch` feeds gradient-based inits (KeepLoRA);
    `restore_from` (a checkpoint state) replaces such an init when rebuilding a trained model."""
    spec = get(method)
    resolved = spec.resolve_setting(setting)
    targets = resolve_targets(model, target_modules)
    torch.manual_seed(seed)
    if spec.build_config is None:
        return _full_finetuning(model)
    from peft import get_peft_model

    with _compiler_environment_kept():
        wrapped = get_peft_model(model, spec.build_config(resolved, targets))
    if restore_from is not None and spec.restore is not None:
        spec.restore(wrapped, restore_from)
    elif spec.post_init is not None:
        spec.post_init(wrapped, init_batch)
    return wrapped


def _full_finetuning(model: nn.Module) -> nn.Module:
    for name, param in model.named_parameters():
        param.requires_grad = not any(part in EXCLUDED_FROM_TARGETS for part in name.split("."))
    return model


def trainable_state(model: nn.Module, method: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: the parameters that train (adapter-only for PEFT), plus the frozen
    tensors of a data-dependent init (KeepLoRA's A and initial B) when `method` has any."""
    keys = get(method).init_state if method else ()
    tensors = {n: p for n, p in model.named_parameters() if p.requires_grad or any(k in n for k in keys)}
    tensors.update({n: b for n, b in model.named_buffers() if any(k in n for k in keys)})
    return {n: t.detach().clone().contiguous() for n, t in tensors.items()}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put a checkpoint's trainable tensors back; every trainable parameter must be present, and anything
    else in the checkpoint must be an init tensor the model already holds (see `wrap(restore_from=...)`)."""
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    held = expected | {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    state = {n: t for n, t in state.items() if n in expected or n not in held}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
