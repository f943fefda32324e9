"""The bundled published table, analysed: per-method hypervolumes and the budget-matched OFT vs LoRA
comparison for Qwen2.5-7B SFT math (the paper's headline claim, made a number)."""
from __future__ import annotations

import pytest

from analysis import pareto, published


def test_qwen_sft_math_fronts_and_hypervolumes():
    base, points = published.points("qwen2.5-7b", "math", "sft")
    assert base == {"target": 35.30, "retention": 46.97}
    result = pareto.frontier_analysis(points)
    worst, best = 46.97 - 24.78, -0.28  # forgetting of PiSSA (forgets most) and of the one that gains retention
    assert result["reference"] == {"gain": 0.0, "forgetting": pytest.approx(worst + 0.1 * (worst - best))}
    hv = {m: v["hypervolume"] for m, v in result["methods"].items()}
    assert hv["oft"] == pytest.approx(266.10, abs=0.01) and hv["lora"] == pytest.approx(182.26, abs=0.01)
    assert max(hv, key=hv.get) == "oft"
    assert hv["pissa"] == pytest.approx(20.74, abs=0.01)  # it forgets most, yet gains: just beyond the nadir it counts
    assert hv["ia3"] == 0.0  # no gain over the base model: no volume, whatever the reference
    # a reference fixed at the nadir itself (as a config can set it) erases PiSSA, as the nadir rule used to
    at_nadir = pareto.frontier_analysis(points, reference={"forgetting": worst})
    assert at_nadir["reference"] == {"gain": 0.0, "forgetting": worst}
    assert at_nadir["methods"]["pissa"]["hypervolume"] == 0.0
    assert at_nadir["methods"]["oft"]["hypervolume"] == pytest.approx(238.08, abs=0.01)
    verdicts = {(r["a"], r["b"]): r["dominates"] for r in result["budget_matched"]}
    assert verdicts[("oft-b32", "lora-r8a16")] == "oft-b32"  # 17.55M vs 20.19M: better on both axes
    assert verdicts[("oft-b128", "lora-r32a64")] == "neither"
    assert set(result["front"]) == {"full", "oft-b32", "oft-b128", "vera-r256"}


def test_unknown_column_is_a_clear_error():
    with pytest.raises(ValueError, match="allowed: qwen2.5-7b/math"):
        published.points("gpt2", "math")
