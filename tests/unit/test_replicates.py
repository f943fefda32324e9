"""Seeds as replicates: configuration means with t intervals, the front over means, and which dominance
relations the seeds actually support."""
from __future__ import annotations

import pytest

from analysis import pareto, replicates

pytestmark = pytest.mark.unit

OBJECTIVES = list(pareto.DEFAULT_OBJECTIVES)


def _seeds(label: str, gains: list[float], forgetting: list[float]) -> list[dict]:
    return [{"label": f"{label}{i}", "configuration": label, "seed": i, "method": "lora", "params": 10,
             "gain": g, "forgetting": f} for i, (g, f) in enumerate(zip(gains, forgetting))]


def test_a_configuration_is_the_mean_of_its_seeds_with_a_t_interval():
    rows = replicates.configurations(_seeds("a", [0.1, 0.2, 0.3], [0.02, 0.02, 0.02]), OBJECTIVES)
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1, 2] and rows[0]["trials"] == ["a0", "a1", "a2"]
    assert rows[0]["gain"] == pytest.approx(0.2)
    half = 4.302653 * 0.1 / 3 ** 0.5  # t(0.975, 2 df) x sd / sqrt(n)
    assert rows[0]["gain_ci"] == pytest.approx([0.2 - half, 0.2 + half], abs=1e-6)
    assert rows[0]["forgetting_ci"] == pytest.approx([0.02, 0.02])  # no spread


def test_dominance_the_seeds_support_is_told_apart_from_dominance_by_noise():
    points = (_seeds("best", [0.30, 0.31, 0.29], [0.010, 0.012, 0.011])
              + _seeds("clearly_worse", [0.10, 0.11, 0.09], [0.050, 0.052, 0.048])   # far below, tight seeds
              + _seeds("noisy", [0.05, 0.45, 0.28], [0.001, 0.040, 0.001]))  # mean 0.26 / 0.014: dominated, by noise
    result = replicates.analyse(points, OBJECTIVES)
    rows = {r["label"]: r for r in result["configurations"]}
    assert result["front"] == ["best0"]
    assert rows["clearly_worse0"]["significantly_dominated_by"] == ["best0"]
    assert rows["noisy0"]["dominated_by"] == ["best0"] and rows["noisy0"]["significantly_dominated_by"] == []
    assert result["not_significant"] == ["noisy0"]
    assert result["reference"]["forgetting"] > max(r["forgetting"] for r in rows.values())


def test_one_seed_per_configuration_supports_no_dominance():
    points = _seeds("a", [0.3], [0.01]) + _seeds("b", [0.1], [0.05])
    result = replicates.analyse(points, OBJECTIVES)
    rows = {r["label"]: r for r in result["configurations"]}
    assert rows["a0"]["gain_ci"] is None and rows["b0"]["dominated_by"] == ["a0"]
    assert result["not_significant"] == ["b0"]


def test_analyze_groups_a_sweeps_seeds_and_says_what_they_support(tmp_path):
    """A sweep dir with two LoRA ranks x three seeds: `analyze` reports each rank once, as the mean of its
    seeds, and prints whether r4's lead over r2 is more than seed noise."""
    from orchestrator import config
    from orchestrator.results import sweep_analysis
    from orchestrator.storage.sweep_dir import SweepDir

    cfg = config.validate({"name": "seeds", "output_dir": str(tmp_path / "sweep"), "methods": ["lora"]})
    where = SweepDir.of(cfg)
    where.claim(cfg, resume=False)
    outcomes = {2: ([0.10, 0.11, 0.09], [0.030, 0.031, 0.029]), 4: ([0.20, 0.21, 0.19], [0.010, 0.011, 0.012])}
    for r, (gains, forgetting) in outcomes.items():
        for seed, (gain, forgot) in enumerate(zip(gains, forgetting)):
            trial_id = f"r{r}-s{seed}"
            spec = {"method": "lora", "setting": {"r": r}, "train": {"seed": seed, "lr": 1e-3}, "eval": {}, "model": {}}
            where.trial(trial_id).write_result({
                "trial_id": trial_id, "trial_dir": str(where.trial(trial_id).root), "method": "lora",
                "setting": {"r": r}, "status": "completed", "config": spec, "started_at": float(r * 10 + seed),
                "params": {"trainable": 1000 * r}, "timings": {"total_s": 1.0},
                "final": {"step": 4, "gain": gain, "forgetting": forgot, "target": 0.1 + gain, "retention": 0.4 - forgot}})
    result, _ = sweep_analysis.analyze(where)
    rows = {row["label"]: row for row in result["replicates"]["configurations"]}
    assert set(rows) == {"r2-s0", "r4-s0"} and rows["r4-s0"]["seeds"] == [0, 1, 2]
    assert rows["r4-s0"]["gain"] == pytest.approx(0.20) and rows["r4-s0"]["on_front"]
    assert rows["r2-s0"]["significantly_dominated_by"] == ["r4-s0"]
    lines = sweep_analysis.summary_lines(result)
    assert any("over seeds: front of configuration means r4-s0" in line for line in lines)
    assert any(line.strip().startswith("r2-s0 lora") and "(significant)" in line for line in lines)
    page = sweep_analysis.write_report(where).read_text()
    assert "<h2>Seeds as replicates</h2>" in page and "r4-s0" in page
