"""Exact resume: everything the next optimizer step depends on besides the trainable weights, captured at a
checkpoint and put back into a fresh DeepSpeed engine, so a killed trial continues to the same weights,
bit for bit, as one that was never interrupted.

What is captured: AdamW's moments of every trainable parameter (full, unpartitioned fp32 tensors read with
DeepSpeed's public `safe_get_full_optimizer_state` under ZeRO 1-3, from the torch optimizer under ZeRO-0,
so the state does not depend on how it was partitioned), the optimizer's step count, the RNG states
(torch, numpy, python) and the regime's own (GRPO's sampling generator), of every rank of a data-parallel
trial. The learning-rate schedule is a function of the step and the data order a seeded stream the regime
fast-forwards, so the step restores both. Tensors are stored with safetensors, never pickled;
`orchestrator.trials.checkpoints` owns the files.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from orchestrator.process import rank_and_world


def _base_optimizer(engine: Any) -> torch.optim.Optimizer:
    """The torch optimizer whose state holds the moments: ZeRO wraps it, ZeRO-0 uses it directly."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def _zero(engine: Any) -> bool:
    return engine.zero_optimization_stage() > 0


def _optimized_tensors(engine: Any) -> list[torch.Tensor]:
    """The tensors the torch optimizer updates, hence keys its state by: the model's parameters under
    ZeRO-0, flat fp32 partitions under ZeRO 1-2 (its param groups), and under ZeRO-3 the flat fp32
    partitions it swaps into its param groups one sub-group at a time during a step."""
    flats = getattr(engine.optimizer, "fp32_partitioned_groups_flat", None)
    if flats is not None:
        return list(flats)
    return [p for group in _base_optimizer(engine).param_groups for p in group["params"]]


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def capture(engine: Any, model: nn.Module, regime: Any, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, plain data) of the training state after optimizer step `step`. Under ZeRO every rank must
    call it (reading a full moment gathers its partitions)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    optimizer = _base_optimizer(engine)
    tensors: dict[str, torch.Tensor] = {}
    for name, param in _trainable(model).items():
        for key in ("exp_avg", "exp_avg_sq"):
            value = safe_get_full_optimizer_state(param, key) if _zero(engine) else optimizer.state[param][key]
            tensors[f"optimizer.{key}.{name}"] = value.detach().float().cpu().contiguous().clone()
    steps = {float(state["step"]) for state in optimizer.state.values()}
    if len(steps) != 1:
        raise RuntimeError(f"resume state: the optimizer's parameter groups disagree on the step ({sorted(steps)})")
    data = {"step": step, "optimizer_step": steps.pop(), "zero_stage": engine.zero_optimization_stage()}
    for rank, (own_tensors, own_rng) in enumerate(_every_rank(_random_state(regime))):
        prefix = f"rank{rank}." if rank else ""  # rank 0's keys stay those of a one-process run
        tensors.update({prefix + k: v for k, v in own_tensors.items()})
        data[prefix + "rng"] = own_rng
    return tensors, data


def _random_state(regime: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's random state: torch (and CUDA) generators, the regime's own, python's and numpy's."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors.update({f"regime.{k}": v for k, v in regime.state().items()})
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    return tensors, {"python": [python_state[0], list(python_state[1]), python_state[2]],
                     "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}


def _every_rank(state: Any) -> list[Any]:
    """Each rank's `state`, in rank order (every rank calls; a world of one has only its own): random
    states differ per rank (GRPO ranks sample differently), so an exact resume keeps them all."""
    world = rank_and_world()[1]
    if world == 1:
        return [state]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def restore(engine: Any, model: nn.Module, regime: Any, tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
    """Put a captured state into a freshly initialised engine (whose weights already hold the checkpoint's).
    The optimizer has no state before its first step, so each of its tensors gets a state shaped like
    torch's AdamW makes it, then the moments are written through DeepSpeed's mapping (ZeRO) or directly."""
    from deepspeed.utils import safe_set_full_optimizer_state

    optimizer = _base_optimizer(engine)
    for flat in _optimized_tensors(engine):
        optimizer.state[flat] = {"step": torch.tensor(float(data["optimizer_step"]), dtype=torch.float32),
                                 "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
    for name, param in _trainable(model).items():
        for key in ("exp_avg", "exp_avg_sq"):
            value = tensors[f"optimizer.{key}.{name}"]
            if _zero(engine):
                safe_set_full_optimizer_state(param, value.to(param.device), key)
            else:
                optimizer.state[param][key].copy_(value)
    rank = rank_and_world()[0]
    prefix = f"rank{rank}." if rank else ""
    if prefix + "rng" not in data:
        raise RuntimeError(f"resume state: no random state for rank {rank} (saved by a smaller world)")
    own = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)} if prefix else tensors
    torch.set_rng_state(own["rng.torch"])
    if torch.cuda.is_available() and "rng.cuda" in own:
        torch.cuda.set_rng_state(own["rng.cuda"])
    python_state = data[prefix + "rng"]["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = data[prefix + "rng"]["numpy"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    regime.restore({k.removeprefix("regime."): v for k, v in own.items() if k.startswith("regime.")})
