"""Selection rules pick the documented operating point from validation scores."""
from __future__ import annotations

import pytest

from analysis import rewind

BASE = {"label": "base", "target": 0.10, "retention": 0.60}
FINAL = {"label": "final", "target": 0.50, "retention": 0.40}
POINTS = [{"label": "a=0.25", "target": 0.30, "retention": 0.58},
          {"label": "a=0.5", "target": 0.52, "retention": 0.50},
          {"label": "a=0.75", "target": 0.51, "retention": 0.45}, FINAL]


def test_max_target_under_a_forgetting_cap():
    assert rewind.select(POINTS, FINAL, BASE, "max_target", tau=0.05)["label"] == "a=0.25"
    assert rewind.select(POINTS, FINAL, BASE, "max_target", tau=0.12)["label"] == "a=0.5"


def test_max_retention_within_a_target_tolerance():
    assert rewind.select(POINTS, FINAL, BASE, "max_retention", delta=0.0)["label"] == "a=0.5"
    assert rewind.select(POINTS, FINAL, BASE, "max_retention", delta=0.25)["label"] == "a=0.25"


def test_dominate_final_and_knee():
    assert rewind.select(POINTS, FINAL, BASE, "dominate_final")["label"] == "a=0.5"  # +0.02 target, +0.10 retention
    assert rewind.select([FINAL], FINAL, BASE, "dominate_final") is FINAL
    # the a = 1 interpolation is the final point, its scores off by float rounding: not a better point
    rebuilt = {"label": "interp a=1", "target": FINAL["target"] + 3e-9, "retention": FINAL["retention"] + 2e-9}
    assert rewind.select([rebuilt, FINAL], FINAL, BASE, "dominate_final") is FINAL
    assert rewind.select(POINTS, FINAL, BASE, "knee")["label"] == "a=0.5"


@pytest.mark.parametrize("text,expected", [("0:1:0.25", [0.0, 0.25, 0.5, 0.75, 1.0]), ("0.3", [0.0, 0.3, 1.0]),
                                           ("0:1:0.1", [round(0.1 * i, 10) for i in range(11)])])
def test_parse_alphas(text, expected):
    assert rewind.parse_alphas(text) == pytest.approx(expected)


def test_bad_alphas_and_rule():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        rewind.parse_alphas("0,1.5")
    with pytest.raises(ValueError, match="allowed: max_target"):
        rewind.select(POINTS, FINAL, BASE, "best")


def test_rewinding_can_only_add_hypervolume():
    trials = [{"trial_id": "t1", "final": {**FINAL, "method": "lora"}, "chosen": {**POINTS[1], "method": "lora"}}]
    hv = rewind.hypervolume_before_after(trials, BASE)
    assert hv["after"] > hv["before"] and hv["reference"]["gain"] == 0.0


def _suite(hits: list[int]) -> dict:
    task = {"metric": "exact_match", "score": sum(hits) / len(hits),
            "items": {"id": [str(i) for i in range(len(hits))], "hit": hits}}
    return {"score": task["score"], "tasks": {"t": task}}


def _scored(target: list[int], retention: list[int]) -> dict:
    return {"target": _suite(target), "retention": _suite(retention)}


def test_test_hypervolume_before_and_after_rewinding_carries_paired_intervals():
    """One trial on 40 test items: the final point gains 10 target items and loses 8 retention items; the
    rewound point keeps 7 of the gains and loses 2. Adding it grows the front's test hypervolume, and
    the bootstrap interval of that growth (same item draws for all points) lies above zero."""
    base = _scored([0] * 40, [1] * 40)
    final = _scored([1] * 10 + [0] * 30, [0] * 8 + [1] * 32)
    chosen = _scored([1] * 7 + [0] * 33, [0] * 2 + [1] * 38)
    trials = [{"trial_id": "t1", "method": "lora", "chosen": {"label": "interp a=0.5"},
               "test": {"base": base, "final": final, "chosen": chosen}}]
    hv = rewind.test_hypervolume_before_after(trials)
    # reference: gain 0, forgetting 0.2 + 10% of (0.2 - 0.05) = 0.215
    assert hv["reference"] == {"gain": 0.0, "forgetting": pytest.approx(0.215)}
    assert hv["before"] == pytest.approx(0.25 * 0.015) and hv["after"] == pytest.approx(0.25 * 0.015 + 0.175 * 0.15)
    assert hv["difference_ci"][0] > 0 and hv["difference_ci"][0] <= hv["difference"] <= hv["difference_ci"][1]
    assert hv["before_ci"][0] <= hv["before"] <= hv["before_ci"][1]
    same = [dict(trials[0], test={"base": base, "final": final, "chosen": final})]
    assert rewind.test_hypervolume_before_after(same)["difference_ci"] == [0.0, 0.0]  # nothing added, on any draw
