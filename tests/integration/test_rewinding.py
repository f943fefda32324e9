"""Rewinding a real (tiny) trial: the path's ends reproduce the base and the final checkpoint, selection
reads validation scores only, and the rewound checkpoint rebuilds the chosen model."""
from __future__ import annotations

import pytest

from analysis import rewind
from orchestrator import config
from orchestrator.results import sweep_rewind
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import trial
from tests.helpers import tiny_config


@pytest.mark.parametrize("method,setting", [("lora", {"r": 2}), ("oft", {"block_size": 8})])
def test_path_ends_selection_and_rewound_checkpoint(tmp_path, tiny_model_dir, isolated_cache, method, setting):
    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep", steps=6, checkpoint_every=3, lr=0.05)
                          | {"methods": [{"name": method, "settings": [setting]}]})
    SweepDir.of(cfg).claim(cfg, resume=False)
    result = trial.run(cfg, method, setting, SweepDir.of(cfg).trial(f"{method}-t"))
    assert result["status"] == "completed"

    inner = sweep_rewind.make_evaluator(cfg)
    calls = []

    def evaluate(spec, split):
        calls.append((split, spec))
        return inner(spec, split)

    how = config.RewindConfig(paths=["trajectory", "interp"], alphas="0,0.5,1", select="dominate_final", tau=0.0, delta=0.02)
    record = sweep_rewind.rewind_trial(cfg, result, how, evaluate)
    points = {p["label"]: p for p in record["points"]}
    for kind in ("target", "retention"):
        assert points["interp a=1"][kind] == pytest.approx(points["final"][kind], abs=1e-4)
        assert points["interp a=0"][kind] == pytest.approx(points["base"][kind], abs=1e-4)
        assert points["step 6"][kind] == points["final"][kind]  # the trajectory's end is the final checkpoint
    if method == "oft":
        assert "interp-dense a=0.5" in points  # the paper's comparison path for orthogonal methods
    tests = [spec for split, spec in calls if split == "test"]
    assert len(tests) == 1 and tests[0] == record["chosen"]["spec"]  # one test look, at the chosen point
    assert all(split in ("validation", "test") for split, _ in calls)
    # the test split's base, final and chosen scores, item by item: the front's test hypervolume with intervals
    hv = rewind.test_hypervolume_before_after([record])
    assert hv["before_ci"][0] - 1e-12 <= hv["before"] <= hv["before_ci"][1] + 1e-12 and hv["after"] >= hv["before"]
    assert hv["difference_ci"][0] >= 0  # adding a point never shrinks a front, on any draw

    again = inner({"checkpoint": record["checkpoint"]}, "validation")
    assert again["target"]["score"] == pytest.approx(record["chosen"]["target"], abs=1e-4)
    assert again["retention"]["score"] == pytest.approx(record["chosen"]["retention"], abs=1e-4)
