"""A sweep's analysis and its one-file HTML report: opens offline in headless Chromium with every plot
rendered (a screenshot is kept in runs/test-artifacts/)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.browser import chromium, skip_without
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_analyze_and_report_of_a_sweep(tmp_path, tiny_model_dir, isolated_cache):
    cfg = tiny_config(tiny_model_dir, tmp_path / "sweep", steps=4, checkpoint_every=2)
    cfg["methods"] = [{"name": "lora", "settings": [{"r": 2}, {"r": 4}]}, {"name": "oft", "settings": [{"block_size": 8}]}]
    cfg["search"] = {"sampler": "grid"}
    cfg["resources"] = {"cpus_per_worker": 1}
    cfg["ray"] = {"address": "local", "num_cpus": 2}
    cfg["tracking"] = {"enabled": False}
    cfg["rewind"] = {"enabled": True, "alphas": "0,0.5,1"}  # runs on the front trials when the sweep ends
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = _cli("sweep", str(config))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rewound = json.loads((tmp_path / "sweep" / "analysis" / "rewind.json").read_text())
    assert rewound["trials"] and rewound["hypervolume"]["after"] >= rewound["hypervolume"]["before"]
    assert "frontier hypervolume" in done.stdout

    analyzed = _cli("analyze", str(tmp_path / "sweep"))
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    pareto_json = json.loads((tmp_path / "sweep" / "analysis" / "pareto.json").read_text())
    assert len(pareto_json["points"]) == 3 and pareto_json["reference"]["gain"] == 0.0
    assert set(pareto_json["methods"]) == {"lora", "oft"} and len(pareto_json["progress"]) == 3
    assert "global hypervolume" in analyzed.stdout

    geometry = _cli("analyze", str(tmp_path / "sweep"), "--geometry", "--all-checkpoints", "--layer-stride", "1")
    assert geometry.returncode == 0, geometry.stderr[-2000:]
    geo = json.loads((tmp_path / "sweep" / "analysis" / "geometry.json").read_text())
    assert len(geo["rows"]) == 6  # 3 trials x 2 checkpoints
    assert {"stable_rank", "intruders", "procrustes_residual", "linear_cka", "csd_rel"} <= set(geo["correlations"])
    assert "best predictor of forgetting" in geometry.stdout

    reported = _cli("report", str(tmp_path / "sweep"), "--published", "qwen2.5-7b/math")
    assert reported.returncode == 0, reported.stderr[-2000:]
    page = (tmp_path / "sweep" / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "the report must not load scripts from anywhere"
    assert "Leaderboard" in page and "Spearman vs forgetting" in page  # the geometry section is in
    assert "<th>gain_ci</th>" in page and '"arrayminus"' in page  # intervals in the table, error bars in the plots
    assert "training vs interpolation" in page and "not run yet" not in page  # and the rewinding one

    figures = page.count('class="plotly-graph-div"')
    assert figures >= 10  # frontier plots + published overlay + geometry + rewinding plots
    with chromium(1300, 2600) as browser:
        skip_without(browser)
        dom = browser.look((tmp_path / "sweep" / "report.html").as_uri(), "report.png", min_shot_bytes=20_000)
    assert dom.count('class="main-svg"') >= figures, "plotly did not render every figure"
