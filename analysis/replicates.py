"""Seeds as replicates: trials that differ only in their seed measure one configuration several times.

A configuration's value in an objective is the mean over its seeds, with a t interval across them (the
seed-to-seed spread: initialisation, data order, sampling). The front is drawn over configuration means;
each configuration off that front is checked against the front members that dominate it by mean: the
dominance is significant when one of them is no worse in every objective and better in at least one by a
Welch t interval (95%) that excludes zero. Where it is not, the data cannot tell the two apart, and the
analysis says so instead of ranking them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from analysis import pareto

LEVEL = 0.95


def t_interval(values: Sequence[float]) -> list[float] | None:
    """t interval of the mean; None for a single value (no spread to measure)."""
    if len(values) < 2:
        return None
    if np.ptp(values) == 0:  # all seeds equal: no spread
        return [float(values[0])] * 2
    low, high = stats.t.interval(LEVEL, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return [float(low), float(high)]


def configurations(points: Sequence[dict], objectives: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per configuration (points sharing `configuration`): its seeds, and per objective the mean
    over them, the values and their interval. Order: first appearance."""
    groups: dict[str, list[dict]] = {}
    for p in points:
        members = groups.setdefault(p["configuration"], [])
        if p.get("seed") not in [m.get("seed") for m in members]:  # a reused duplicate is not another replicate
            members.append(p)
    rows = []
    for key, members in groups.items():
        first = members[0]
        row = {"label": first["label"], "configuration": key, "method": first["method"],
               "setting": first.get("setting"), "params": first.get("params"),
               "seeds": [p.get("seed") for p in members], "trials": [p["label"] for p in members]}
        for name, _ in objectives:
            values = [float(p[name]) for p in members]
            row[name], row[f"{name}_values"], row[f"{name}_ci"] = float(np.mean(values)), values, t_interval(values)
        rows.append(row)
    return rows


def _better(a: dict, b: dict, name: str, mode: str) -> bool:
    """a better than b in `name` by a Welch 95% interval of the difference that excludes zero."""
    x, y = a[f"{name}_values"], b[f"{name}_values"]
    if len(x) < 2 or len(y) < 2:
        return False
    if np.var(x) == 0 and np.var(y) == 0:
        return (np.mean(x) > np.mean(y)) if mode == "max" else (np.mean(x) < np.mean(y))
    low, high = stats.ttest_ind(x, y, equal_var=False).confidence_interval(LEVEL)
    return low > 0 if mode == "max" else high < 0


def _no_worse(a: dict, b: dict, name: str, mode: str) -> bool:
    return a[name] >= b[name] if mode == "max" else a[name] <= b[name]


def significantly_dominates(a: dict, b: dict, objectives: Sequence[tuple[str, str]]) -> bool:
    return (all(_no_worse(a, b, n, m) for n, m in objectives)
            and any(_better(a, b, n, m) for n, m in objectives))


def verdict(row: dict[str, Any]) -> str:
    """Where a configuration stands: on the front of means, or dominated (significantly or only by means)."""
    if row["on_front"]:
        return "on the front"
    if row["significantly_dominated_by"]:
        return f"dominated by {', '.join(row['significantly_dominated_by'])} (significant)"
    return f"dominated by {', '.join(row['dominated_by'])} in the means, not significantly"


def analyse(points: Sequence[dict], objectives: Sequence[tuple[str, str]],
            reference: dict[str, float] | None = None) -> dict[str, Any]:
    """Configuration means, their front and hypervolume, and which dominance relations the seeds support."""
    rows = configurations(points, objectives)
    frontier = pareto.frontier_analysis(rows, objectives, reference)
    on_front = set(frontier["front"])
    for row in rows:
        row["on_front"] = row["label"] in on_front
        if row["on_front"]:
            continue
        dominating = [f for f in rows if f["label"] in on_front and pareto.point_dominates(f, row, objectives)]
        row["dominated_by"] = [f["label"] for f in dominating]
        row["significantly_dominated_by"] = [f["label"] for f in dominating
                                             if significantly_dominates(f, row, objectives)]
    return {"objectives": frontier["objectives"], "reference": frontier["reference"],
            "hypervolume": frontier["hypervolume"], "front": frontier["front"], "configurations": rows,
            "not_significant": [r["label"] for r in rows if not r["on_front"] and not r["significantly_dominated_by"]]}
