"""Ray Tune callbacks of a sweep, run in the driver: live progress lines, and MLflow sync of each trial.

Module-level classes on purpose: Tune pickles its callbacks with its experiment state, and a class
defined inside a function would be pickled by value together with the console or client it uses."""
from __future__ import annotations

from typing import Any

from ray.tune import Callback


class SweepProgress(Callback):
    def __init__(self, total: int) -> None:
        self.total = total
        self.running = self.done = self.failed = 0

    def _line(self, text: str) -> None:
        from orchestrator.console import console

        console.print(f"[{self.done} done, {self.running} running, {self.failed} failed / {self.total}] {text}",
                      highlight=False, markup=False, soft_wrap=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running += 1
        self._line(f"started {trial.trial_id}: {trial.config.get('method')}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running, self.done = self.running - 1, self.done + 1
        last = trial.last_result or {}
        self._line(f"finished {trial.trial_id} {last.get('method')} {last.get('setting', '')}: "
                   f"gain {last.get('target_gain', float('nan')):+.3f}, "
                   f"forgetting {last.get('forgetting', float('nan')):+.3f}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running, self.failed = self.running - 1, self.failed + 1
        self._line(f"failed {trial.trial_id} after its retries")


class TrackingSync(Callback):
    """Replays each finished (or finally failed) trial's result JSON into MLflow. A tracking failure only
    warns: results stay on disk and `peft-arena sync SWEEP_DIR` replays them later, idempotently."""

    def __init__(self, sweep: dict[str, Any]) -> None:
        self.sweep = sweep
        self._tracker: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "_tracker": None}  # the MLflow client stays out of Tune's state

    def _sync(self, trial: Any) -> None:
        from orchestrator import tracking
        from orchestrator.config import SweepConfig
        from orchestrator.sweep_dir import SweepDir

        cfg = SweepConfig.model_validate(self.sweep)
        result = SweepDir.of(cfg).trial(trial.trial_id).read_result()
        if result is None:  # failed before it wrote anything: nothing to show
            return

        def sync(tracker: Any) -> None:
            tracker.sync_base(result)
            tracker.sync_trial(result)

        self._tracker = tracking.best_effort(cfg, f"sync trial {trial.trial_id}", sync, self._tracker)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._sync(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._sync(trial)
