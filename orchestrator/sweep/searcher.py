"""The Optuna searcher Ray Tune drives, made safe to resume after a killed driver.

Tune saves its experiment state (trials and the searcher) every few seconds. A driver killed between
Optuna's ask for a trial and the next save leaves that Optuna trial RUNNING in the study while the
restored Tune has never heard of it: nobody will ever tell its result, and the sampler keeps treating its
configuration as taken (the grid's BruteForceSampler then repeats another configuration instead, and the
sweep ends without the one that was in flight). On restore, such an orphan is closed as FAIL and its
parameters are enqueued, so the next trial Tune asks for runs that configuration again, and
`sweep.continue_interrupted` hands it the orphan's checkpoints.

Why by hand: Ray's `OptunaSearch.restore` brings back its own state only, and Optuna has no notion of a
trial whose asker died (its heartbeat-based retry needs a storage heartbeat that Tune's ask/tell does not keep).
"""
from __future__ import annotations

from collections.abc import Collection

import optuna
from ray.tune.search.optuna import OptunaSearch


# what a finished trial's last report says about it, kept on its Optuna trial as user attributes
LABELS = ("method", "setting", "budget", "trial_dir")


class ResumableOptunaSearch(OptunaSearch):
    """`OptunaSearch` that requeues the study's orphans when Tune restores it (a resumed sweep), and whose
    Optuna trials name their sweep trial (user attributes `trial_id`, then its method, setting, budget and
    dir), so optuna-dashboard's "Trial 3" leads to the trial's dir, result and MLflow run."""

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
        return params

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            for key in LABELS:
                if result and key in result:
                    ot_trial.set_user_attr(key, result[key])
        super().on_trial_complete(trial_id, result, error)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # the Optuna trials of the Tune trials the restored experiment knows (and will run or has run)
        requeue_orphans(self._ot_study, {trial.number for trial in self._ot_trials.values()})


def orphans(study: optuna.Study, known: Collection[int] = ()) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials of the study that no Tune trial in `known` (Optuna trial numbers) will tell."""
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if t.number not in known]


def fail_orphans(study: optuna.Study, known: Collection[int] = ()) -> list[optuna.trial.FrozenTrial]:
    """Close the orphans as FAIL (once Tune is done, every trial still RUNNING is one); returns them."""
    found = orphans(study, known)
    for orphan in found:
        study._storage.set_trial_state_values(orphan._trial_id, optuna.trial.TrialState.FAIL)
    return found


def requeue_orphans(study: optuna.Study, known: Collection[int]) -> int:
    """Close each orphan as FAIL and enqueue its parameters for the next ask; returns how many."""
    found = fail_orphans(study, known)
    for orphan in found:
        study.enqueue_trial(orphan.params, user_attrs={"requeued_from": orphan.number})
    return len(found)
