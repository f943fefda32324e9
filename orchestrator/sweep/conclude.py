"""What follows a sweep's search, the same for every way it is started: the front, `summary.json`,
rewinding of the front (when the config asks for it) and the sweep's outputs in MLflow. On object storage
they go up together at the end."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.config import SweepConfig
from orchestrator.results import sweep_analysis, sweep_rewind
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.tracking.mlflow_runs import tracking_uri


@dataclass(frozen=True)
class Concluded:
    front: list[str]  # the trial ids on the sweep's Pareto front
    rewound: dict[str, Any] | None  # the rewinding summary, when the front was rewound
    tracking_uri: str | None  # where the sweep's runs are, when it is tracked


def conclude(cfg: SweepConfig, results: list[dict[str, Any]]) -> Concluded:
    with SweepDir.of(cfg) as where:
        front = sweep_analysis.front(cfg, results)
        summary = sweep_analysis.write_summary(cfg, results, front)
        rewound = None
        if cfg.rewind.enabled and front:
            rewound = sweep_rewind.rewind_sweep(where, None, cfg.rewind)
        if cfg.tracking.enabled:
            sweep_analysis.log_outputs(cfg, [summary])
    return Concluded(front, rewound, tracking_uri(cfg) if cfg.tracking.enabled else None)
