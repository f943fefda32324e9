"""The sweep's live progress lines in the terminal, a Ray Tune callback run in the driver.

A module-level class on purpose: Tune pickles its callbacks with its experiment state, and a class
defined inside a function would be pickled by value together with the console it uses."""
from __future__ import annotations

from typing import Any

from ray.tune import Callback


class SweepProgress(Callback):
    def __init__(self, total: int) -> None:
        self.total = total
        self.running = self.done = self.failed = 0

    def _line(self, text: str) -> None:
        from orchestrator.cli.console import console

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
