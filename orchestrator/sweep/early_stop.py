"""A Ray Tune scheduler that stops dominated trials at checkpoint rungs (`search.early_stop`), by the rule in
`analysis.early_stop`. Trials report each checkpoint's objectives to Tune (`checkpoint_step` says which);
when one reaches a rung, its objectives are recorded there and it continues only if it ranks in the top
1/eta of the trials recorded at that rung. A stopped trial keeps its checkpoints and scores: its last
point is a valid operating point, recorded with status `stopped_early`.

The rung records are rebuilt from the trial results on disk the first time the scheduler decides
anything, so a resumed sweep (whose scheduler Tune restores as it was created) keeps its decisions.
"""
from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from analysis import early_stop
from orchestrator.config import OBJECTIVES
from orchestrator.storage.sweep_dir import Status, SweepDir

STEP_KEY = "checkpoint_step"  # in a trial's intermediate reports: the checkpoint the objectives belong to


def checkpoint_objectives(point: dict[str, Any], params: dict[str, Any] | None) -> dict[str, float]:
    """The objectives a checkpoint of a trial has (what the trial reports to Tune at that checkpoint)."""
    values = {name: spec.at_checkpoint(point, params) for name, spec in OBJECTIVES.items()}
    return {name: value for name, value in values.items() if value is not None}


class ParetoRungs(FIFOScheduler):
    """Asynchronous successive halving on the sweep's objectives (see analysis.early_stop). Picklable:
    Tune saves it with the experiment; it holds plain data only."""

    def __init__(self, sweep_dir: str, objectives: list[tuple[str, str]], grace_steps: int, reduction_factor: float,
                 max_steps: int, ranking: str, seed: int = 0) -> None:
        super().__init__()
        self.sweep_dir, self.objectives = sweep_dir, objectives
        self.rungs = early_stop.rungs(grace_steps, reduction_factor, max_steps)
        self.eta, self.ranking, self.seed = reduction_factor, ranking, seed
        self.recorded: dict[int, dict[str, list[float]]] = {rung: {} for rung in self.rungs}
        self.stopped: dict[str, int] = {}  # trial id -> the rung it was stopped at
        self._loaded = False

    def _vector(self, values: dict[str, float]) -> list[float] | None:
        found = [values.get(name) for name, _ in self.objectives]
        return None if any(v is None for v in found) else [float(v) for v in found]

    def _load(self) -> None:
        """Every trial's first checkpoint at or past each rung, from the results on disk."""
        self._loaded = True
        for result in SweepDir.at(self.sweep_dir).collect():
            if result.get("duplicate_of"):
                continue
            for rung in self.rungs:
                point = next((c for c in result.get("checkpoints", []) if c["step"] >= rung), None)
                vector = self._vector(checkpoint_objectives(point, result.get("params"))) if point else None
                if vector is not None:
                    self.recorded[rung].setdefault(result["trial_id"], vector)
            if result.get("status") == Status.STOPPED_EARLY:
                self.stopped[result["trial_id"]] = result["stopped_at_step"]

    def decide(self, trial_id: str, step: int, values: dict[str, float]) -> str:
        """CONTINUE or STOP for a trial that reported the objectives of its checkpoint at `step`."""
        if not self._loaded:
            self._load()
        vector = self._vector(values)
        if vector is None:
            return TrialScheduler.CONTINUE
        for rung in self.rungs:
            if rung > step or trial_id in self.recorded[rung]:
                continue  # not reached yet, or decided before (it continued)
            at_rung = self.recorded[rung]
            at_rung[trial_id] = vector
            ids = list(at_rung)
            modes = [mode for _, mode in self.objectives]
            if not early_stop.keeps([at_rung[i] for i in ids], ids.index(trial_id), modes, self.eta, self.ranking,
                                    self.seed):
                self.stopped[trial_id] = rung
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if STEP_KEY not in result:
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, int(result[STEP_KEY]), result)

    def debug_string(self) -> str:
        return f"ParetoRungs({self.ranking}, rungs {self.rungs}, eta {self.eta:g}): {len(self.stopped)} stopped"
