"""Non-dominated sets for any number of objectives, each maximised or minimised.

Points are rows of objective values; `modes` says per column whether larger ("max") or smaller ("min")
is better. A point dominates another if it is at least as good in every objective and strictly better in
one; duplicates do not dominate each other, so tied points are all on the front.
"""
from __future__ import annotations

from typing import Sequence

Mode = str  # "max" | "min"


def _as_minimisation(points: Sequence[Sequence[float]], modes: Sequence[Mode]) -> list[tuple[float, ...]]:
    for mode in modes:
        if mode not in ("max", "min"):
            raise ValueError(f"mode: {mode!r}; allowed: max, min")
    return [tuple(-v if m == "max" else v for v, m in zip(p, modes)) for p in points]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b, both as minimisation vectors."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: Sequence[Sequence[float]], modes: Sequence[Mode]) -> list[int]:
    """Indices of the points no other point dominates, in input order. O(n^2 d): sweeps hold hundreds of
    trials, not millions."""
    mins = _as_minimisation(points, modes)
    return [i for i, p in enumerate(mins) if not any(dominates(q, p) for j, q in enumerate(mins) if j != i)]
