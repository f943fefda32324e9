"""Multi-objective early stopping, replayed over recorded learning curves: the per-checkpoint gain and
forgetting of every trial of a real sweep on the default model (18 trials x 5 checkpoints, run without early
stopping, saved in bench/data/curves.json so the replay takes seconds). Trials arrive in the sweep's order,
one at a time as the sweep ran them; each policy decides at each rung exactly as the sweep's scheduler
would (`orchestrator.early_stop.ParetoRungs.decide`), and a stopped trial's last checkpoint is its final
point. Reported per policy: the fraction of training steps not run, and the hypervolume of the front of
final points against one fixed reference (gain 0, forgetting just worse than any final point).

Policies: no stopping; `hv` (this project's ranking); `epsnet` (MOASHA's published rule, Schmucker et al.
2021: non-dominated sorting, then the epsilon-net order; reimplemented in analysis/early_stop.py); random
stopping at the same compute as `hv` (trials stopped at random rungs until as many steps are saved, median
of 200 draws). Goals: `hv` saves >= 40% of the steps and loses <= 2% of the no-stopping hypervolume; and its
hypervolume is >= MOASHA's at equal compute (MOASHA's hypervolume-vs-steps curve over reduction factors,
interpolated at the steps `hv` trained).

The live check runs the same sweep again with `search.early_stop.kind: hv` (same seeds, same order) and
compares it with the recorded sweep, which is the same sweep with early stopping off: steps trained and the
hypervolume of the front of final points, both sweeps against one reference.

    python -m bench.early_stopping [--eta 3] [--grace 6]       # replay (seconds)
    python -m bench.early_stopping --record                     # first run the sweep the curves come from
    python -m bench.early_stopping --live                       # then the same sweep with early stopping on

Both sweeps write under runs/bench-early-stop/ and are resumed (`--resume`) when re-run after an
interruption, so a 2-core machine can record them over several sittings.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from analysis import pareto
from bench import common
from bench.common import record
from orchestrator.storage.sweep_dir import Status, SweepDir, has_final_point
from orchestrator.sweep.early_stop import ParetoRungs

DATA = Path(__file__).resolve().parent / "data" / "curves.json"
SWEEPS = Path("runs") / "bench-early-stop"
# The sweep the curves come from: the quick demo's methods and budgets, three learning rates each, five
# checkpoints a trial, evaluated on fewer items, one core a trial (so that the recorded sweep and the
# early-stopping sweep can run side by side on a 2-core machine and compute bit-identical checkpoints):
# the 18 trials take about an hour and a half there; --resume continues an interrupted one.
RECORD = ["quick", "--set", "search.lr=[3.0e-4, 1.0e-3, 3.0e-3]",
          "--set", "search.num_samples=18", "--set", "train.steps=30", "--set", "train.checkpoint_every=6",
          "--set", "train.batch_size=4", "--set", "eval.max_items=8", "--set", "tracking.enabled=false",
          "--set", "resources.cpus_per_worker=1"]
OBJECTIVES = [("target_gain", "max"), ("forgetting", "min")]


def run_sweep(name: str, *extra: str) -> Path:
    """The RECORD sweep (plus `extra` overrides) in SWEEPS/name, resumed when an earlier run left it there."""
    out = SWEEPS / name
    common.run_sweep(out, *RECORD, *extra, "--set", f"name={name}")
    return out


def curves(sweep: Path) -> list[dict]:
    """Per trial in start order: its checkpoints' objectives (every trial that trained to a final point)."""
    return [{"trial_id": r["trial_id"], "method": r["method"], "setting": r["setting"], "status": r["status"],
             "lr": r["config"]["train"]["lr"], "steps": r["config"]["train"]["steps"],
             "checkpoints": [{"step": c["step"], "target_gain": c["gain"], "forgetting": c["forgetting"]}
                             for c in r["checkpoints"]]}
            for r in SweepDir(sweep).collect() if has_final_point(r)]


def record_curves(out: Path) -> None:
    """Run the sweep (no early stopping) and keep its learning curves, once every trial has them: a sweep
    stopped early (Ctrl-C ends a sweep cleanly) is resumed by the next --record, not replayed in part."""
    trials = curves(run_sweep("curves", "--set", "search.max_concurrent_trials=2"))  # the order is the grid's
    planned = int(next(a.split("=", 1)[1] for a in RECORD if a.startswith("search.num_samples=")))
    if len(trials) < planned:
        raise SystemExit(f"the recorded sweep has {len(trials)} of {planned} trials; run --record again to resume it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "peft-arena sweep " + " ".join(RECORD), "trials": trials}, indent=1) + "\n")


def replay(trials: list[dict], ranking: str | None, eta: float, grace: int) -> tuple[list[dict], int]:
    """(final point per trial, steps trained) under a policy (None: no stopping)."""
    steps = max(t["steps"] for t in trials)
    with tempfile.TemporaryDirectory() as empty:
        scheduler = ParetoRungs(empty, OBJECTIVES, grace, eta, steps, ranking) if ranking else None
        finals, trained = [], 0
        for trial in trials:
            last = trial["checkpoints"][-1]
            for point in trial["checkpoints"]:
                last = point
                if scheduler is not None and scheduler.decide(trial["trial_id"], point["step"], point) == "STOP":
                    break
            finals.append(last)
            trained += last["step"]
    return finals, trained


def random_stopping(trials: list[dict], rungs: list[int], budget: int, seed: int) -> tuple[list[dict], int]:
    """Trials stopped at random rungs until at least `budget` steps are saved."""
    rng = random.Random(seed)
    stop_at = {t["trial_id"]: t["steps"] for t in trials}
    saved, candidates = 0, [(t["trial_id"], r) for t in trials for r in rungs]
    rng.shuffle(candidates)
    for trial_id, rung in candidates:
        if saved >= budget:
            break
        if rung < stop_at[trial_id]:
            saved += stop_at[trial_id] - rung
            stop_at[trial_id] = rung
    finals = [max((c for c in t["checkpoints"] if c["step"] <= stop_at[t["trial_id"]]), key=lambda c: c["step"])
              for t in trials]
    return finals, sum(f["step"] for f in finals)


def hypervolume(finals: list[dict], reference: list[float]) -> float:
    return pareto.hypervolume([[f[n] for n, _ in OBJECTIVES] for f in finals], [m for _, m in OBJECTIVES], reference)


ETAS = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)


def eta_curve(trials: list[dict], ranking: str, grace: int, reference: list[float]) -> dict[float, tuple[int, float]]:
    """A policy's (steps trained, hypervolume) at each reduction factor in ETAS."""
    curve = {}
    for eta in ETAS:
        finals, trained = replay(trials, ranking, eta, grace)
        curve[eta] = (trained, hypervolume(finals, reference))
    return curve


def at_equal_compute(trials: list[dict], ranking: str, grace: int, reference: list[float], steps: int) -> float:
    """A policy's hypervolume at `steps` trained: its (steps, hypervolume) points over reduction factors,
    linearly interpolated (and the no-stopping point at full compute)."""
    total = sum(t["steps"] for t in trials)
    curve = {total: hypervolume(replay(trials, None, 2.0, grace)[0], reference)}
    for trained, hv in eta_curve(trials, ranking, grace, reference).values():
        curve.setdefault(trained, hv)
    xs = sorted(curve)
    if steps <= xs[0]:
        return curve[xs[0]]
    for lo, hi in zip(xs, xs[1:]):
        if lo <= steps <= hi:
            return curve[lo] + (curve[hi] - curve[lo]) * (steps - lo) / (hi - lo)
    return curve[xs[-1]]


def live(eta: float, grace: int) -> None:
    """The recorded sweep (early stopping off) against the same sweep run with `hv` early stopping on."""
    off = json.loads(DATA.read_text())["trials"]
    on = curves(run_sweep("early-stop-on", "--set", "search.early_stop.kind=hv",
                          "--set", f"search.early_stop.grace_steps={grace}",
                          "--set", f"search.early_stop.reduction_factor={eta}"))
    if len(on) < len(off):
        raise SystemExit(f"the early-stopping sweep has {len(on)} of {len(off)} trials; run --live again to resume it")
    finals_off, finals_on = [t["checkpoints"][-1] for t in off], [t["checkpoints"][-1] for t in on]
    reference = [0.0, max(f["forgetting"] for f in finals_off + finals_on) + 0.01]
    hv_off, hv_on = hypervolume(finals_off, reference), hypervolume(finals_on, reference)
    steps_off, steps_on = sum(f["step"] for f in finals_off), sum(f["step"] for f in finals_on)
    saved, lost = 1 - steps_on / steps_off, 1 - hv_on / hv_off
    record("early_stop_live", "training steps run, early stopping on vs off in two real sweeps (lower is better)",
           steps_on, steps_off, ">= 40% of the steps saved with <= 2% hypervolume lost, same seeds",
           saved >= 0.40 and lost <= 0.02, saved=saved, hypervolume_lost=lost, hv_on=hv_on, hv_off=hv_off,
           reference=reference, trials_on=len(on), trials_off=len(off), eta=eta, grace_steps=grace,
           stopped_early=sum(t["status"] == Status.STOPPED_EARLY for t in on),
           sweep="peft-arena sweep " + " ".join(RECORD))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", action="store_true", help="run the sweep the curves come from first")
    parser.add_argument("--live", action="store_true", help="then run it again with early stopping on")
    parser.add_argument("--eta", type=float, default=3.0)
    parser.add_argument("--grace", type=int, default=6)
    args = parser.parse_args()
    if args.record or not DATA.is_file():
        record_curves(DATA)
    if args.live:
        live(args.eta, args.grace)
    data = json.loads(DATA.read_text())
    trials = data["trials"]
    total = sum(t["steps"] for t in trials)
    full, _ = replay(trials, None, args.eta, args.grace)
    worst = max(f["forgetting"] for t in trials for f in t["checkpoints"])
    reference = [0.0, worst + 0.01]
    base_hv = hypervolume(full, reference)
    outcomes = {}
    for ranking in ("hv", "epsnet"):
        finals, trained = replay(trials, ranking, args.eta, args.grace)
        outcomes[ranking] = {"hv": hypervolume(finals, reference), "trained": trained,
                             "saved": 1 - trained / total, "stopped": sum(f["step"] < t["steps"] for f, t in zip(finals, trials))}
    rungs = ParetoRungs(".", OBJECTIVES, args.grace, args.eta, max(t["steps"] for t in trials), "hv").rungs
    draws = [random_stopping(trials, rungs, total - outcomes["hv"]["trained"], seed) for seed in range(200)]
    random_hv = statistics.median(hypervolume(f, reference) for f, _ in draws)
    ours, moasha = outcomes["hv"], outcomes["epsnet"]
    lost = 1 - ours["hv"] / base_hv
    moasha_equal = at_equal_compute(trials, "epsnet", args.grace, reference, ours["trained"])
    # how the trade-off moves with the reduction factor (read on the same curves: in-sample)
    by_eta = {str(eta): {"saved": 1 - trained / total, "hypervolume_lost": 1 - hv / base_hv}
              for eta, (trained, hv) in eta_curve(trials, "hv", args.grace, reference).items()}
    details = {"trials": len(trials), "checkpoints_per_trial": len(trials[0]["checkpoints"]), "eta": args.eta,
               "grace_steps": args.grace, "rungs": rungs, "reference": reference, "hv_no_stopping": base_hv,
               "hv_ours": ours["hv"], "hv_moasha": moasha["hv"], "hv_random_same_compute": random_hv,
               "saved_ours": ours["saved"], "saved_moasha": moasha["saved"], "stopped_ours": ours["stopped"],
               "stopped_moasha": moasha["stopped"], "hv_moasha_at_our_compute": moasha_equal, "ours_by_eta": by_eta, "curves": str(DATA.name),
               "curves_from": data["command"]}
    record("early_stop_compute_saved", "fraction of training steps not run, ours (higher is better)",
           ours["saved"], 0.40, ">= 0.40 of the steps saved with <= 2% hypervolume lost vs no stopping",
           ours["saved"] >= 0.40 and lost <= 0.02, hypervolume_lost=lost, **details)
    record("early_stop_vs_moasha", "front hypervolume at equal compute, ours vs MOASHA (higher is better)",
           ours["hv"], moasha_equal, ">= MOASHA's at equal compute (and > random stopping at ours)",
           ours["hv"] >= moasha_equal and ours["hv"] > random_hv, **details)


if __name__ == "__main__":
    main()
