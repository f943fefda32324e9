"""Non-dominated sets and hypervolumes agree with brute force on random point sets (2-4 objectives, mixed
directions, ties and duplicates included)."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from analysis import pareto


def brute_front(points: np.ndarray, modes: list[str]) -> list[int]:
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    mins = points * signs
    keep = []
    for i in range(len(mins)):
        no_worse = (mins <= mins[i]).all(axis=1)
        better = (mins < mins[i]).any(axis=1)
        if not (no_worse & better).any():
            keep.append(i)
    return keep


def brute_hypervolume(points: np.ndarray, modes: list[str], ref: list[float]) -> float:
    """Exact by cell decomposition: split space at every coordinate, add each cell some point's box covers."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    mins, r = points * signs, np.array(ref) * signs
    axes = [sorted({*mins[:, d].tolist(), r[d]}) for d in range(len(modes))]
    volume = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        low = np.array([axes[d][c] for d, c in enumerate(cell)])
        high = np.array([axes[d][c + 1] for d, c in enumerate(cell)])
        if (high <= r).all() and (mins <= low).all(axis=1).any():
            volume += float(np.prod(high - low))
    return volume


CASES = [(d, seed) for d in (2, 3, 4) for seed in range(40)]


@pytest.mark.parametrize("dims,seed", CASES)
def test_front_and_hypervolume_match_brute_force(dims, seed):
    rng = random.Random(seed * 10 + dims)
    n = rng.randint(1, 9 if dims < 4 else 6)
    points = np.array([[rng.randint(0, 5) for _ in range(dims)] for _ in range(n)], dtype=float)
    if n > 2:
        points[-1] = points[0]  # an exact duplicate
    modes = [rng.choice(["max", "min"]) for _ in range(dims)]
    ref = [(-1.0 if m == "max" else 6.0) for m in modes]  # worse than every point
    assert pareto.non_dominated(points.tolist(), modes) == brute_front(points, modes)
    assert pareto.hypervolume(points.tolist(), modes, ref) == pytest.approx(brute_hypervolume(points, modes, ref))


def test_points_beyond_the_reference_add_nothing():
    # gain (max) and forgetting (min); reference: the base model (gain 0) and forgetting 0.3
    points = [[0.2, 0.1], [-0.1, 0.0], [0.4, 0.5]]
    assert pareto.hypervolume(points, ["max", "min"], [0.0, 0.3]) == pytest.approx(0.2 * 0.2)


def test_two_d_staircase_by_hand():
    # minimise both, ref (4, 4): (1,3) covers 3x1 = 3, (2,2) adds 2x1 = 2, (3,1) adds 1x1 = 1
    points = [[1, 3], [2, 2], [3, 1]]
    assert pareto.hypervolume(points, ["min", "min"], [4, 4]) == pytest.approx(6.0)


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="allowed: max, min"):
        pareto.non_dominated([[1, 2]], ["max", "up"])


def test_the_default_reference_lies_a_tenth_of_the_range_beyond_the_worst_forgetting():
    """The method that forgets most still encloses volume for what it gains (at the nadir itself it would
    not); a single point's reference is a tenth of its own value beyond it."""
    points = [{"label": "a", "method": "oft", "gain": 0.3, "forgetting": 0.05},
              {"label": "b", "method": "lora", "gain": 0.1, "forgetting": 0.01}]
    result = pareto.frontier_analysis(points)
    assert result["reference"] == {"gain": 0.0, "forgetting": pytest.approx(0.05 + 0.1 * 0.04)}
    assert result["methods"]["oft"]["hypervolume"] == pytest.approx(0.3 * 0.004)
    assert pareto.default_reference(points[:1], pareto.DEFAULT_OBJECTIVES) == {"gain": 0.0, "forgetting": pytest.approx(0.055)}


def test_a_sweep_config_fixes_the_reference_so_two_sweeps_compare_on_one():
    from orchestrator import config
    from orchestrator.results import sweep_analysis

    cfg = config.validate({"name": "x", "methods": [{"name": "lora"}], "search": {"objectives": [
        {"name": "target_gain", "mode": "max"}, {"name": "forgetting", "mode": "min", "reference": 0.1}]}})
    points = [{"label": "a", "method": "lora", "params": 10, "gain": 0.2, "forgetting": 0.04}]
    result = sweep_analysis.frontier(cfg, points)
    assert result["reference"] == {"gain": 0.0, "forgetting": 0.1}
    assert result["hypervolume"] == pytest.approx(0.2 * 0.06)
    assert sweep_analysis.summary_lines(result)[0].startswith("global hypervolume 0.012 (reference gain = 0, forgetting = 0.1)")


def test_a_worst_forgetting_inside_the_noise_is_not_erased_by_a_tiny_range():
    """Two trials whose forgetting differs by 0.0012, well inside its +-0.002 interval: a tenth of the range
    would put the reference 0.00012 beyond OFT, leaving it 1/6 of LoRA's hypervolume for gaining 0.09 more;
    the margin is at least the intervals' half-width, so OFT keeps the volume its gain earns."""
    points = [{"label": "lora", "method": "lora", "gain": 0.10, "forgetting": 0.0001, "forgetting_ci": [-0.0019, 0.0021]},
              {"label": "oft", "method": "oft", "gain": 0.19, "forgetting": 0.0013, "forgetting_ci": [-0.0007, 0.0033]}]
    result = pareto.frontier_analysis(points)
    assert result["reference"] == {"gain": 0.0, "forgetting": pytest.approx(0.0013 + 0.002)}
    assert result["methods"]["oft"]["hypervolume"] == pytest.approx(0.19 * 0.002)
    assert result["methods"]["oft"]["hypervolume"] > result["methods"]["lora"]["hypervolume"] / 2


def test_the_search_progress_plot_ticks_whole_trials():
    from analysis import report

    for trials in (2, 7, 45):
        axis = report.progress_figure([0.1] * trials).layout.xaxis
        assert axis.tick0 == 1 and isinstance(axis.dtick, int) and axis.dtick >= 1 and trials // axis.dtick <= 10
