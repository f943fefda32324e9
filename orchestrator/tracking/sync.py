"""The Ray Tune callback that syncs each finished trial into MLflow, run in the driver.

Module-level classes on purpose: Tune pickles its callbacks with its experiment state, and a class
defined inside a function would be pickled by value together with the client it uses."""
from __future__ import annotations

from typing import Any

from ray.tune import Callback


class TrackingSync(Callback):
    """Replays each finished (or finally failed) trial's result JSON into MLflow. A tracking failure only
    warns: results stay on disk and `peft-arena sync SWEEP_DIR` replays them later, idempotently."""

    def __init__(self, sweep: dict[str, Any]) -> None:
        self.sweep = sweep
        self._tracker: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "_tracker": None}  # the MLflow client stays out of Tune's state

    def _sync(self, trial: Any) -> None:
        from orchestrator.config import SweepConfig
        from orchestrator.storage.sweep_dir import SweepDir
        from orchestrator.tracking import mlflow_runs

        cfg = SweepConfig.model_validate(self.sweep)
        result = SweepDir.of(cfg).trial(trial.trial_id).read_result()
        if result is None:  # failed before it wrote anything: nothing to show
            return

        def sync(tracker: Any) -> None:
            tracker.sync_base(result)
            tracker.sync_trial(result)

        self._tracker = mlflow_runs.best_effort(cfg, f"sync trial {trial.trial_id}", sync, self._tracker)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._sync(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._sync(trial)
