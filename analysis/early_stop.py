"""Multi-objective early stopping at checkpoint rungs: which trials keep training.

Asynchronous successive halving (ASHA, Li et al. 2020) with a multi-objective ranking, as MOASHA
(Schmucker et al. 2021) does: rungs sit at `grace`, `grace * eta`, `grace * eta^2`, ... training steps; when
a trial reaches a rung, its objective vector is recorded there, and it continues only if it ranks within the
top ceil(n / eta) of the n vectors recorded at that rung so far (itself included). Written here because no
library offers it on Ray Tune: Tune's schedulers take one metric, Optuna's pruners refuse multi-objective
studies, and syne-tune's MOASHA runs only on syne-tune.

Rankings (all first sort into Pareto layers, non-dominated sorting; they differ inside a layer):
- `hv` (the default): within a layer, by exclusive hypervolume contribution, the volume a point alone adds
  (extremes first); a point that adds nothing ranks after those that do. It keeps the points that shape
  the front, which is what the sweep's own figure of merit, the front's hypervolume, rewards.
- `epsnet`: within a layer, the greedy epsilon-net order MOASHA publishes: start from the point best in the
  first objective, then repeatedly take the point farthest (max-min distance in objective space scaled to
  [0, 1]) from those already taken.
- `random`: a seeded random order, the control that stops as much but blindly.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from analysis import pareto

RANKINGS = ("hv", "epsnet", "random")


def rungs(grace: int, eta: float, max_steps: int) -> list[int]:
    """Training steps at which decisions are made (the last step is never a rung: a trial that reached it
    has finished anyway)."""
    found, step = [], grace
    while step < max_steps:
        found.append(int(step))
        step = int(math.ceil(step * eta))
    return found


def layers(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[list[int]]:
    """Pareto layers (non-dominated sorting): layer 0 is the front, layer 1 the front of the rest, ..."""
    remaining = list(range(len(points)))
    found = []
    while remaining:
        front = pareto.non_dominated([points[i] for i in remaining], modes)
        found.append([remaining[i] for i in front])
        remaining = [i for j, i in enumerate(remaining) if j not in set(front)]
    return found


def _scaled(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[list[float]]:
    """Objectives as minimisation, scaled to [0, 1] over these points (constant columns become 0)."""
    mins = [[-v if m == "max" else v for v, m in zip(p, modes)] for p in points]
    low = [min(col) for col in zip(*mins)]
    high = [max(col) for col in zip(*mins)]
    return [[(v - lo) / (hi - lo) if hi > lo else 0.0 for v, lo, hi in zip(p, low, high)] for p in mins]


def _hv_order(layer: list[int], scaled: list[list[float]]) -> list[int]:
    ref = [1.1] * len(scaled[0])  # just beyond the worst point in every objective: extremes contribute
    modes = ["min"] * len(ref)
    whole = pareto.hypervolume([scaled[i] for i in layer], modes, ref)
    contribution = {i: whole - pareto.hypervolume([scaled[j] for j in layer if j != i], modes, ref) for i in layer}
    return sorted(layer, key=lambda i: (-contribution[i], i))


def _epsnet_order(layer: list[int], scaled: list[list[float]]) -> list[int]:
    chosen = [min(layer, key=lambda i: (scaled[i][0], i))]
    rest = [i for i in layer if i != chosen[0]]
    while rest:
        far = max(rest, key=lambda i: (min(math.dist(scaled[i], scaled[j]) for j in chosen), -i))
        chosen.append(far)
        rest.remove(far)
    return chosen


def rank(points: Sequence[Sequence[float]], modes: Sequence[str], ranking: str = "hv", seed: int = 0) -> list[int]:
    """Indices of `points`, best first."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking: {ranking!r}; allowed: {', '.join(RANKINGS)}")
    if ranking == "random":
        order = list(range(len(points)))
        random.Random(seed).shuffle(order)
        return order
    scaled = _scaled(points, modes)
    order_in = _hv_order if ranking == "hv" else _epsnet_order
    return [i for layer in layers(points, modes) for i in order_in(layer, scaled)]


def keeps(recorded: Sequence[Sequence[float]], candidate: int, modes: Sequence[str], eta: float,
          ranking: str = "hv", seed: int = 0) -> bool:
    """Whether `recorded[candidate]`, just recorded at a rung, ranks in the top ceil(n / eta) there."""
    order = rank(recorded, modes, ranking, seed)
    return order.index(candidate) < max(1, math.ceil(len(recorded) / eta))
