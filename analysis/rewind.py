"""Path-wise rewinding (PEFT-Arena, Huang et al., arXiv 2605.28819, "Interpolation" and "Path-wise
rewinding"): final SFT checkpoints overshoot; moving back along a parameterisation-aware path recovers
retention at little or no target cost.

Three kinds of path from a trial, each point a plain spec that `orchestrator.trials.checkpoints.load_for_eval`
turns into a model:
- trajectory: the saved checkpoints (step 0 = the base model ... the final step);
- interp: base <-> final, W0 + a dW (additive) or Cayley(sqrt(a) Q) (OFT/BOFT), plus the dense-delta path
  for orthogonal methods, for comparison;
- layerwise: the final update rescaled per layer to equalise its strength (SafeScale, MinScale).
Points are scored on the *validation* split only; a selection rule picks one; that one point is then
scored once on the test split. The selection never sees a test score.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Literal, Sequence, get_args

import numpy as np

from analysis import pareto
from evals import uncertainty

Rule = Literal["max_target", "max_retention", "knee", "dominate_final"]
RULES: tuple[str, ...] = get_args(Rule)
PathName = Literal["trajectory", "interp", "layerwise"]
PATHS: tuple[str, ...] = get_args(PathName)
# dominate_final: a margin below this is the final point itself recomputed (the a = 1 interpolation rebuilds
# the final weights as a scaled adapter: its scores differ from the final's by float rounding, ~1e-9)
SAME_POINT = 1e-6


ALPHAS_ALLOWED = "allowed: START:STOP:STEP with STEP > 0 and START <= STOP, or a comma list, every alpha in [0, 1]"


def parse_alphas(text: str) -> list[float]:
    """'0:1:0.1' -> [0.0, 0.1, ..., 1.0]; '0,0.3,1' -> [0.0, 0.3, 1.0]. Always includes both ends. A bad
    text raises ValueError saying what is allowed (the caller names the option or field)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or start > stop:
                raise ValueError
            count = int(math.floor((stop - start) / step + 1e-9))
            values = [round(start + i * step, 10) for i in range(count + 1)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(ALPHAS_ALLOWED) from None
    if any(not 0.0 <= a <= 1.0 for a in values):
        raise ValueError(ALPHAS_ALLOWED)
    return sorted({*values, 0.0, 1.0})


def trajectory_points(base_model: dict, checkpoints: Sequence[dict]) -> list[dict]:
    """Step 0 (the base model) and every saved checkpoint of the trial, in step order."""
    points = [{"label": "step 0", "kind": "trajectory", "step": 0, "alpha": 0.0, "spec": {"model": base_model}}]
    for c in sorted(checkpoints, key=lambda c: c["step"]):
        points.append({"label": f"step {c['step']}", "kind": "trajectory", "step": c["step"],
                       "spec": {"checkpoint": c["path"]}})
    return points


def interpolation_points(final_checkpoint: str, alphas: Sequence[float], orthogonal: bool) -> list[dict]:
    """The base <-> final path at each alpha; orthogonal methods also get the dense-delta path."""
    kinds = [("interp", "auto")] + ([("interp-dense", "dense")] if orthogonal else [])
    return [{"label": f"{kind} a={a:g}", "kind": kind, "alpha": a,
             "spec": {"checkpoint": final_checkpoint, "alpha": a, "path": path}}
            for kind, path in kinds for a in alphas]


def layerwise_points(final_checkpoint: str, strength: dict[int, float]) -> list[dict]:
    """SafeScale and MinScale: per-layer factors that flatten the update strength across depth."""
    from methods.interpolate import equalising_factors

    return [{"label": f"layerwise {rule}scale", "kind": "layerwise", "alpha": 1.0, "rule": rule,
             "spec": {"checkpoint": final_checkpoint, "alpha": 1.0,
                      "layer_factors": {str(k): v for k, v in equalising_factors(strength, rule).items()}}}
            for rule in ("safe", "min")]


def score_points(points: list[dict], evaluate: Callable[[dict, str], dict[str, Any]], split: str = "validation") -> list[dict]:
    """Each point with its target and retention scores on `split` (`evaluate(spec, split)` returns the
    {"target": suite result, "retention": suite result} of the model the spec describes)."""
    scored, seen = [], {}
    for point in points:
        key = json.dumps(point["spec"], sort_keys=True)  # e.g. trajectory step 0 is the base model itself
        if key not in seen:
            seen[key] = evaluate(point["spec"], split)
        scores = seen[key]
        scored.append({**point, "target": scores["target"]["score"], "retention": scores["retention"]["score"],
                       "scores": scores})
    return scored


def select(points: Sequence[dict], final: dict, base: dict, rule: Rule, tau: float = 0.0,
           delta: float = 0.02) -> dict:
    """The operating point a rule picks, from validation scores only.
    - max_target: the highest target among points whose forgetting (base retention - retention) <= tau;
    - max_retention: the highest retention among points whose target >= final target - delta;
    - knee: the point farthest above the chord from the base to the final point (normalised axes);
    - dominate_final: the point beating the final on both axes by the largest smaller margin, else final.
    """
    if rule not in RULES:
        raise ValueError(f"select: {rule!r}; allowed: {', '.join(RULES)}")
    if rule == "max_target":
        ok = [p for p in points if base["retention"] - p["retention"] <= tau]
        return max(ok, key=lambda p: (p["target"], p["retention"])) if ok else final
    if rule == "max_retention":
        ok = [p for p in points if p["target"] >= final["target"] - delta]
        return max(ok, key=lambda p: (p["retention"], p["target"])) if ok else final
    if rule == "knee":
        span_t = (final["target"] - base["target"]) or 1.0
        span_r = (base["retention"] - final["retention"]) or 1.0

        def height(p: dict) -> float:  # distance above the base->final chord, in normalised units
            x, y = (base["retention"] - p["retention"]) / span_r, (p["target"] - base["target"]) / span_t
            return (y - x) / math.sqrt(2)

        return max(points, key=height)
    margins = [(min(p["target"] - final["target"], p["retention"] - final["retention"]), p) for p in points]
    best, point = max(margins, key=lambda m: m[0])
    return point if best > SAME_POINT else final


def hypervolume_before_after(trials: Sequence[dict], base: dict) -> dict[str, Any]:
    """The frontier of the final points vs the frontier with each trial's rewound point added (rewinding
    only adds options, so the second can only be larger). Gain / forgetting against the base model; the
    reference (`pareto.default_reference` over all points, both sets on the same one) is recorded."""
    def gain_forgetting(p: dict, label: str) -> dict:
        return {"label": label, "method": p.get("method", "?"), "gain": p["target"] - base["target"],
                "forgetting": base["retention"] - p["retention"]}

    finals = [gain_forgetting(t["final"], t["trial_id"]) for t in trials]
    rewound = finals + [gain_forgetting(t["chosen"], f"{t['trial_id']} {t['chosen']['label']}") for t in trials]
    reference = pareto.default_reference(rewound, pareto.DEFAULT_OBJECTIVES)
    before = pareto.frontier_analysis(finals, reference=reference)
    after = pareto.frontier_analysis(rewound, reference=reference)
    return {"reference": reference, "before": before["hypervolume"], "after": after["hypervolume"],
            "front_before": before["front"], "front_after": after["front"]}


def test_hypervolume_before_after(trials: Sequence[dict]) -> dict[str, Any] | None:
    """The front's hypervolume on the *test* split, of the final points vs the final plus chosen points,
    with 95% paired bootstrap intervals: each draw resamples every task's items once, for the base model,
    every final and every chosen point alike, and recomputes both hypervolumes against one reference (the
    point estimates' `pareto.default_reference`). Each trial's `test` holds the three suite results; None
    when some of them kept no per-item scores (a trial scored before they were kept)."""
    kinds = ("target", "retention")
    suites = {kind: [trials[0]["test"]["base"][kind]] + [t["test"]["final"][kind] for t in trials]
              + [t["test"]["chosen"][kind] for t in trials] for kind in kinds}
    if not all(uncertainty.has_items(s) for kind in kinds for s in suites[kind]):
        return None
    names, modes = zip(*pareto.DEFAULT_OBJECTIVES)

    def gain_forgetting(target: Sequence[float], retention: Sequence[float]) -> list[list[float]]:
        """Finals then chosen points, as (gain, forgetting) against the base model (row 0)."""
        return [[float(t - target[0]), float(retention[0] - r)] for t, r in zip(target[1:], retention[1:])]

    def before_after(values: list[list[float]]) -> tuple[float, float]:
        return (pareto.hypervolume(values[:len(trials)], modes, ref), pareto.hypervolume(values, modes, ref))

    estimate = gain_forgetting(*([s["score"] for s in suites[kind]] for kind in kinds))
    reference = pareto.default_reference([dict(zip(names, v)) for v in estimate], pareto.DEFAULT_OBJECTIVES)
    ref = [reference[n] for n in names]
    before, after = before_after(estimate)
    draws = [uncertainty.resampled_scores(suites[kind]) for kind in kinds]
    resampled = np.array([before_after(gain_forgetting(target, retention)) for target, retention in zip(*(d.T for d in draws))])
    return {"reference": reference, "before": before, "after": after, "difference": after - before,
            "before_ci": uncertainty.percentile_interval(resampled[:, 0]),
            "after_ci": uncertainty.percentile_interval(resampled[:, 1]),
            "difference_ci": uncertainty.percentile_interval(resampled[:, 1] - resampled[:, 0])}
