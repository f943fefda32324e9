"""The paper's three claims (PEFT-Arena, arXiv 2605.28819), tested on the default model with their
uncertainty. Runs the `claims` sweep (orchestrator/configs/claims.yaml: LoRA and OFT, two budgets, three
seeds, four checkpoints a trial, then validation-selected rewinding of the front trials), or resumes it,
and writes bench/results/claims/paper_claims.json with one verdict per claim:

1. Forgetting grows along the training trajectory: every trial's forgetting per checkpoint; per trial, the
   growth from its first to its last checkpoint with a paired bootstrap interval (both checkpoints scored on
   the same items); across trials, the mean growth with a t interval. Holds when that interval is above 0.
2. At matched budgets OFT's front dominates LoRA's: per seed, each method's hypervolume over its two budget
   points, all on one reference (gain 0; forgetting 10% of the observed range beyond the worst final
   point); the mean over seeds and the paired OFT - LoRA difference with t intervals over seeds, and how
   many (seed, budget) pairs have OFT's point dominating LoRA's. Holds when the difference's interval is
   above 0.
3. Rewinding improves the front's test hypervolume: the front trials' final points vs final plus rewound
   points, both scored on the test split, with the paired bootstrap interval of the difference
   (`analysis.rewind.test_hypervolume_before_after`). Holds when that interval is above 0.

    python -m bench.claims          # about an hour on 2 cores; re-run to resume an interrupted sweep
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np

from analysis import pareto, replicates
from bench import common
from bench.common import RESULTS, machine
from evals import uncertainty
from orchestrator.results import sweep_analysis
from orchestrator.storage.sweep_dir import SweepDir, has_final_point

SWEEP = Path("runs") / "claims"
OUT = RESULTS / "claims" / "paper_claims.json"  # not a ratio against a baseline: outside the summary table


def run_sweep() -> SweepDir:
    """The claims sweep and its rewinding, resumed where an earlier run left it (a finished one is kept)."""
    where = SweepDir.at(SWEEP)
    if not where.rewinding.is_file():
        common.run_sweep(SWEEP, "claims")
    return where


def _above_zero(interval: list[float] | None) -> bool:
    return interval is not None and interval[0] > 0


def trajectory(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Claim 1: forgetting along each trial's checkpoints, and its growth from the first to the last."""
    trials, growth = [], []
    for r in results:
        first, last = r["checkpoints"][0], r["checkpoints"][-1]
        low, high = uncertainty.paired_difference_ci(first["retention"], last["retention"])  # = forgetting(last) - forgetting(first)
        grew = last["forgetting"] - first["forgetting"]
        growth.append(grew)
        trials.append({"trial_id": r["trial_id"], "method": r["method"], "setting": r["setting"],
                       "seed": r["config"]["train"]["seed"],
                       "forgetting": [{"step": c["step"], "forgetting": c["forgetting"],
                                       "forgetting_ci": c.get("forgetting_ci")} for c in r["checkpoints"]],
                       "growth": grew, "growth_ci": [low, high]})
    steps = [c["step"] for c in results[0]["checkpoints"]]
    per_step = [{"step": s, "mean_forgetting": float(np.mean([r["checkpoints"][i]["forgetting"] for r in results]))}
                for i, s in enumerate(steps)]
    mean_ci = replicates.t_interval(growth)
    return {"claim": "forgetting grows along the training trajectory", "holds": _above_zero(mean_ci),
            "mean_growth": float(np.mean(growth)), "mean_growth_ci": mean_ci, "per_step": per_step,
            "trials_growing_significantly": sum(_above_zero(t["growth_ci"]) for t in trials),
            "trials_shrinking_significantly": sum(t["growth_ci"][1] < 0 for t in trials),
            "trials": trials}


def matched_budgets(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Claim 2: OFT's and LoRA's hypervolumes per seed on one reference, and budget-matched dominance."""
    points = [{k: p[k] for k in ("label", "method", "seed", "params", "gain", "forgetting")}
              for p in sweep_analysis.points(results)]
    reference = pareto.default_reference(points, pareto.DEFAULT_OBJECTIVES)
    seeds = sorted({p["seed"] for p in points})
    hv: dict[str, list[float]] = {"oft": [], "lora": []}
    pairs: list[dict[str, Any]] = []  # OFT vs LoRA within one seed, budgets within 1.5x (pareto.budget_matched)
    for seed in seeds:
        analysis = pareto.frontier_analysis([p for p in points if p["seed"] == seed], reference=reference)
        for method in hv:  # a method none of whose trials finished at this seed covers nothing
            hv[method].append(analysis["methods"].get(method, {"hypervolume": 0.0})["hypervolume"])
        pairs += analysis["budget_matched"]
    method_of = {p["label"]: p["method"] for p in points}
    difference = [o - l for o, l in zip(hv["oft"], hv["lora"])]
    diff_ci = replicates.t_interval(difference)
    return {"claim": "at matched budgets OFT's front dominates LoRA's", "holds": _above_zero(diff_ci),
            "reference": reference, "seeds": seeds,
            "hypervolume": {m: {"per_seed": v, "mean": float(np.mean(v)), "ci": replicates.t_interval(v)}
                            for m, v in hv.items()},
            "difference_oft_minus_lora": {"per_seed": difference, "mean": float(np.mean(difference)), "ci": diff_ci},
            "matched_pairs": len(pairs),
            "oft_dominates": sum(method_of.get(p["dominates"]) == "oft" for p in pairs),
            "lora_dominates": sum(method_of.get(p["dominates"]) == "lora" for p in pairs),
            "points": points}


def rewinding(where: SweepDir) -> dict[str, Any]:
    """Claim 3: the front's test hypervolume before and after adding the validation-selected points."""
    summary = json.loads(where.rewinding.read_text())
    test = summary["test_hypervolume"]
    moved = [{"trial_id": t["trial_id"], "method": t["method"], "chosen": t["chosen"]["label"],
              "test_final": {k: t["test"]["final"][k]["score"] for k in ("target", "retention")},
              "test_chosen": t["chosen_test"]} for t in summary["trials"]]
    return {"claim": "validation-selected rewinding improves the front's test hypervolume",
            "holds": test is not None and _above_zero(test["difference_ci"]), "test_hypervolume": test,
            "trials": moved, "rewound": sum(t["chosen"] != "final" for t in moved)}


def wall_clock(results: list[dict[str, Any]]) -> dict[str, float]:
    """How long the sweep took: from its first trial's start to its last trial's end (rewinding, which
    follows, is not in the results' clocks)."""
    return {"sweep_s": max(r["ended_at"] for r in results) - min(r["started_at"] for r in results)}


def main() -> None:
    where = run_sweep()
    results = [r for r in where.collect() if has_final_point(r) and r.get("checkpoints")]
    claims = {"trajectory": trajectory(results), "matched_budgets": matched_budgets(results),
              "rewinding": rewinding(where)}
    out = {"name": "paper_claims", "machine": machine(), "sweep": str(SWEEP), "config": "claims", "trials": len(results),
           "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           **wall_clock(results), **claims}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    for key, claim in claims.items():
        print(f"{key}: {claim['claim']}: {'holds' if claim['holds'] else 'does not hold at this scale'}")


if __name__ == "__main__":
    main()
