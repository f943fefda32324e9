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


def point_dominates(a: dict, b: dict, objectives: Sequence[tuple[str, Mode]]) -> bool:
    """Point a dominates point b (dicts with one value per objective name)."""
    first, second = _as_minimisation([[a[n] for n, _ in objectives], [b[n] for n, _ in objectives]],
                                     [m for _, m in objectives])
    return dominates(first, second)


def non_dominated(points: Sequence[Sequence[float]], modes: Sequence[Mode]) -> list[int]:
    """Indices of the points no other point dominates, in input order. O(n^2 d): sweeps hold hundreds of
    trials, not millions."""
    mins = _as_minimisation(points, modes)
    return [i for i, p in enumerate(mins) if not any(dominates(q, p) for j, q in enumerate(mins) if j != i)]


def _dominating_ref(mins: list[tuple[float, ...]], ref: tuple[float, ...]) -> list[tuple[float, ...]]:
    """Points strictly better than the reference in every objective: only they enclose volume."""
    return [p for p in mins if all(x < r for x, r in zip(p, ref))]


def hypervolume_2d(mins: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Exact 2-D hypervolume (minimisation) by one sort and a sweep: O(n log n). Written here because the
    sweep is a few lines and exactness is easy to see; d > 2 goes to Optuna's WFG."""
    points = sorted(_dominating_ref(mins, ref))
    volume, best_second = 0.0, ref[1]
    for first, second in points:
        if second >= best_second:
            continue  # dominated (or tied) by an earlier point with a smaller first objective
        # earlier points (smaller first objective) already cover everything above best_second
        volume += (ref[0] - first) * (best_second - second)
        best_second = second
    return volume


def hypervolume(points: Sequence[Sequence[float]], modes: Sequence[Mode], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by `points` and bounded by `reference`, with per-objective directions.
    2-D by our sweep; higher dimensions by Optuna's exact WFG implementation (wrapped: it is private)."""
    if len(modes) != len(reference):
        raise ValueError(f"reference has {len(reference)} values for {len(modes)} objectives")
    mins = _as_minimisation(points, modes)
    ref = tuple(-r if m == "max" else r for r, m in zip(reference, modes))
    inside = _dominating_ref(mins, ref)
    if not inside:
        return 0.0
    if len(modes) == 2:
        return hypervolume_2d(inside, ref)  # type: ignore[arg-type]
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(np.asarray(inside, dtype=float), np.asarray(ref, dtype=float)))


# ------------------------------------------------------------------------------ frontier analysis
# A point is a dict with at least: label, method, params (trainable), and one value per objective.

DEFAULT_OBJECTIVES = (("gain", "max"), ("forgetting", "min"))


# How far beyond the worst observed value the default reference lies, as a fraction of the observed range.
# At the worst value itself (the usual nadir choice) the method that is worst in one objective encloses no
# volume at all, however much it gains in the other: a 10% margin lets every front point count.
NADIR_MARGIN = 0.1


def default_reference(points: Sequence[dict], objectives: Sequence[tuple[str, Mode]],
                      fixed: dict[str, float] | None = None) -> dict[str, float]:
    """The reference point: a `fixed` value where given (so two sweeps compare on one reference); gain 0 (the
    base model gains nothing); any other objective NADIR_MARGIN of its observed range beyond its worst
    observed value (of its magnitude when all points share one value), and at least the widest half-width
    of the points' intervals of it (`<name>_ci`): when the points differ by less than their noise, a tenth
    of their range would leave the worst of them almost no volume for a difference nobody measured."""
    reference = {}
    for name, mode in objectives:
        if fixed and name in fixed:
            reference[name] = fixed[name]
        elif name == "gain":
            reference[name] = 0.0
        else:
            values = [p[name] for p in points]
            worst = min(values) if mode == "max" else max(values)
            span = (max(values) - min(values)) or abs(worst) or 1.0
            noise = max(((p[f"{name}_ci"][1] - p[f"{name}_ci"][0]) / 2 for p in points if p.get(f"{name}_ci")),
                        default=0.0)
            margin = max(NADIR_MARGIN * span, noise)
            reference[name] = worst - margin if mode == "max" else worst + margin
    return reference


def _values(points: Sequence[dict], objectives: Sequence[tuple[str, Mode]]) -> list[list[float]]:
    return [[p[name] for name, _ in objectives] for p in points]


def budget_matched(points: Sequence[dict], objectives: Sequence[tuple[str, Mode]], factor: float) -> list[dict]:
    """Every pair of points of different methods whose trainable budgets are within `factor` of each
    other (like the paper's OFT-b32 vs LoRA-r8), with which one dominates, if either."""
    modes = [m for _, m in objectives]
    rows = []
    for a, b in ((a, b) for i, a in enumerate(points) for b in points[i + 1:]):
        if a["method"] == b["method"] or not a.get("params") or not b.get("params"):
            continue
        ratio = max(a["params"], b["params"]) / min(a["params"], b["params"])
        if ratio > factor:
            continue
        va, vb = _as_minimisation(_values([a, b], objectives), modes)
        verdict = a["label"] if dominates(va, vb) else b["label"] if dominates(vb, va) else "neither"
        rows.append({"a": a["label"], "b": b["label"], "a_params": a["params"], "b_params": b["params"],
                     "budget_ratio": ratio, "dominates": verdict})
    return rows


def hypervolume_progress(points: Sequence[dict], objectives: Sequence[tuple[str, Mode]],
                         reference: dict[str, float]) -> list[float]:
    """Hypervolume of the first k points, k = 1..n (points in the order the search produced them)."""
    modes, ref = [m for _, m in objectives], [reference[n] for n, _ in objectives]
    values = _values(points, objectives)
    return [hypervolume(values[:k], modes, ref) for k in range(1, len(values) + 1)]


def frontier_analysis(points: Sequence[dict], objectives: Sequence[tuple[str, Mode]] = DEFAULT_OBJECTIVES,
                      reference: dict[str, float] | None = None, budget_factor: float = 1.5) -> dict:
    """Global and per-method fronts with their hypervolumes, all against one reference point, which is
    recorded with the numbers (a hypervolume means nothing without it). `reference` may fix some
    objectives only; the others take `default_reference`'s value."""
    if not points:
        raise ValueError("no points to analyse")
    reference = default_reference(points, objectives, reference)
    modes, ref = [m for _, m in objectives], [reference[n] for n, _ in objectives]
    values = _values(points, objectives)
    front = non_dominated(values, modes)
    per_method = {}
    for method in sorted({p["method"] for p in points}):
        idx = [i for i, p in enumerate(points) if p["method"] == method]
        own = non_dominated([values[i] for i in idx], modes)
        per_method[method] = {"points": len(idx), "front": [points[idx[i]]["label"] for i in own],
                              "hypervolume": hypervolume([values[i] for i in idx], modes, ref)}
    return {"objectives": [{"name": n, "mode": m} for n, m in objectives], "reference": reference,
            "hypervolume": hypervolume(values, modes, ref), "front": [points[i]["label"] for i in front],
            "methods": per_method, "budget_factor": budget_factor,
            "budget_matched": budget_matched(points, objectives, budget_factor),
            "points": [dict(p, on_front=i in front) for i, p in enumerate(points)]}
