"""A driver killed between Optuna's ask and Tune's state save leaves an orphan: a RUNNING Optuna trial no Tune
trial will tell. On resume the orphan is closed and its configuration asked for again, so an exhaustive
(grid) sweep still runs every configuration once, instead of repeating one and never finishing the other."""
from __future__ import annotations

import optuna
import pytest

from orchestrator.sweep.searcher import fail_orphans, requeue_orphans

pytestmark = pytest.mark.unit
CONFIGS = {(m, s) for m in ("lora", "oft") for s in (0, 1)}


def _space(trial: optuna.Trial) -> tuple[str, int]:
    method = trial.suggest_categorical("method", ["lora", "oft"])
    return method, trial.suggest_categorical(f"{method}.setting", [0, 1])


def _tell(study: optuna.Study, trial: optuna.Trial) -> None:
    try:
        study.tell(trial, [0.1, 0.0])
    except RuntimeError as err:  # the grid is exhausted: BruteForceSampler calls study.stop() (the tell is stored)
        assert "Study.stop" in str(err)


def _configurations_finished(requeue: bool) -> set[tuple[str, int]]:
    """A grid sweep of 4 trials over the 4 configurations: trial 0 is told, trial 1 is asked and orphaned by
    the kill; the resumed Tune, which knows trial 0 only, asks for 3 more and tells each."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.BruteForceSampler(seed=0))
    first = study.ask()
    finished = {_space(first)}
    _tell(study, first)
    _space(study.ask())  # the orphan
    if requeue:
        requeue_orphans(study, known={first.number})
    for _ in range(3):
        trial = study.ask()
        finished.add(_space(trial))
        _tell(study, trial)
    return finished


def test_a_resumed_grid_sweep_runs_the_orphans_configuration_instead_of_repeating_another():
    assert _configurations_finished(requeue=True) == CONFIGS
    assert len(_configurations_finished(requeue=False)) == 3  # what it did before: one repeated, one never run


def test_the_orphan_is_closed_as_failed_and_its_parameters_are_asked_for_next():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.BruteForceSampler(seed=0))
    orphan = study.ask()
    config = _space(orphan)
    assert requeue_orphans(study, known=()) == 1
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    again = study.ask()
    assert _space(again) == config and again.user_attrs["requeued_from"] == orphan.number
    assert requeue_orphans(study, known={again.number}) == 0  # a trial Tune knows is no orphan
    assert len(fail_orphans(study)) == 1 and study.trials[again.number].state == optuna.trial.TrialState.FAIL
