"""Multi-objective early stopping: rungs, Pareto layers, the two rankings, and the scheduler's decisions on
synthetic learning curves, each case stating which trials the rule stops."""
from __future__ import annotations

import pytest

from analysis import early_stop
from orchestrator.sweep.early_stop import ParetoRungs

MODES = ["max", "min"]  # target gain up, forgetting down


def test_rungs_grow_geometrically_and_stop_before_the_last_step():
    assert early_stop.rungs(4, 3, 40) == [4, 12, 36]
    assert early_stop.rungs(10, 2, 40) == [10, 20]
    assert early_stop.rungs(40, 2, 40) == []


def test_layers_are_successive_fronts():
    points = [[0.3, 0.1], [0.2, 0.05], [0.1, 0.2], [0.25, 0.2], [0.05, 0.3]]
    # (0.25, 0.2) dominates (0.1, 0.2), which dominates (0.05, 0.3)
    assert early_stop.layers(points, MODES) == [[0, 1], [3], [2], [4]]


def test_hv_ranking_puts_the_front_first_and_the_point_that_adds_most_first_within_it():
    # front: (0.4, 0.30) (0.3, 0.10) (0.2, 0.09); (0.2, 0.09) adds almost nothing next to (0.3, 0.10)
    points = [[0.2, 0.09], [0.4, 0.30], [0.3, 0.10], [0.1, 0.40]]
    order = early_stop.rank(points, MODES, "hv")
    assert set(order[:3]) == {0, 1, 2} and order[3] == 3
    assert order.index(0) == 2  # the near-duplicate ranks last of the front


def test_epsnet_ranking_starts_from_the_best_first_objective_and_spreads_out():
    points = [[0.2, 0.09], [0.4, 0.30], [0.3, 0.10], [0.1, 0.40]]
    order = early_stop.rank(points, MODES, "epsnet")
    assert order[0] == 1  # highest gain first (the first objective, as minimisation of -gain)
    assert order.index(3) == 3  # dominated: after the whole front


@pytest.mark.parametrize("recorded,candidate,eta,kept", [
    ([[0.3, 0.1]], 0, 3, True),                                   # alone at the rung: continues
    ([[0.3, 0.1], [0.2, 0.2]], 1, 3, False),                      # dominated, and top 1 of 2 is the other
    ([[0.3, 0.1], [0.2, 0.2]], 1, 1.5, True),                     # top ceil(2/1.5) = 2 of 2
    ([[0.3, 0.1], [0.35, 0.15], [0.1, 0.3]], 2, 3, False),        # dominated by both
    # all three on the front; (0.3, 0.1) sits between the others and adds least hypervolume: 3rd of top 2
    ([[0.3, 0.1], [0.35, 0.15], [0.25, 0.05], [0.1, 0.3]], 0, 2, False),
    ([[0.3, 0.1], [0.35, 0.15], [0.25, 0.05], [0.1, 0.3]], 2, 2, True),
])
def test_keeps_the_top_one_over_eta(recorded, candidate, eta, kept):
    assert early_stop.keeps(recorded, candidate, MODES, eta) is kept


def _scheduler(tmp_path, eta=2.0) -> ParetoRungs:
    return ParetoRungs(str(tmp_path), [("target_gain", "max"), ("forgetting", "min")], grace_steps=2,
                       reduction_factor=eta, max_steps=12, ranking="hv")


def test_the_scheduler_stops_exactly_the_trials_the_rule_says(tmp_path):
    """Four trials reach rung 2 in turn, then the survivors rung 4, then rung 8 (eta = 2)."""
    stop = _scheduler(tmp_path)
    assert stop.rungs == [2, 4, 8]
    curves = {"a": {2: (0.10, 0.02), 4: (0.20, 0.04), 8: (0.30, 0.05)},
              "b": {2: (0.05, 0.03), 4: (0.08, 0.06), 8: (0.09, 0.07)},   # dominated by a everywhere
              "c": {2: (0.12, 0.05), 4: (0.25, 0.03), 8: (0.35, 0.02)},
              "d": {2: (0.01, 0.10), 4: (0.02, 0.20), 8: (0.03, 0.30)}}   # worst of all
    decisions = {}
    for step in (2, 4, 8):
        for trial in "abcd":
            if decisions.get(trial) == "STOP":
                continue
            gain, forgetting = curves[trial][step]
            decisions[trial] = stop.decide(trial, step, {"target_gain": gain, "forgetting": forgetting})
    # rung 2: a first (kept), b (top 1 of 2: a ranks first: stopped), c (front with a: top 2 of 3 kept),
    # d (dominated, top 2 of 4: stopped); rung 4: a, then c (dominates a: top 1 of 2 -> c kept, a kept
    # before c arrived); rung 8: a, c again
    assert decisions == {"a": "CONTINUE", "b": "STOP", "c": "CONTINUE", "d": "STOP"}
    assert stop.stopped == {"b": 2, "d": 2}
    assert stop.decide("c", 12, {"target_gain": 0.4, "forgetting": 0.02}) == "CONTINUE"  # past the last rung


def test_objectives_missing_from_a_report_never_stop_a_trial(tmp_path):
    assert _scheduler(tmp_path).decide("a", 2, {"loss": 1.0}) == "CONTINUE"
