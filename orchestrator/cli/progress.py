"""The sweep's live progress lines in the terminal, a Ray Tune callback run in the driver.

A module-level class on purpose: Tune pickles its callbacks with its experiment state, and a class
defined inside a function would be pickled by value together with the console it uses."""
from __future__ import annotations

from typing import Any

from ray.tune import Callback


class SweepProgress(Callback):
    """Counts trials by id, not by event: Tune starts a retried trial again (one trial, not two running),
    and a resumed sweep never reports the trials that finished before it was interrupted (`finished`)."""

    def __init__(self, total: int, finished: list[str] | None = None) -> None:
        self.total = total
        self.running: set[str] = set()
        self.done: set[str] = set(finished or [])
        self.failed: set[str] = set()

    def _line(self, text: str) -> None:
        from orchestrator.cli.console import console

        console.print(f"[{len(self.done)} done, {len(self.running)} running, {len(self.failed)} failed / "
                      f"{self.total}] {text}", highlight=False, markup=False, soft_wrap=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._line(f"started {trial.trial_id}: {trial.config.get('method')}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        last = trial.last_result or {}
        self._line(f"finished {trial.trial_id} {last.get('method')} {last.get('setting', '')}: "
                   f"gain {last.get('target_gain', float('nan')):+.3f}, "
                   f"forgetting {last.get('forgetting', float('nan')):+.3f}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        self._line(f"failed {trial.trial_id} after its retries")
