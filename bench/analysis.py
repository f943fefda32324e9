"""Analysis cost on the default model: spectral analysis of every adapted weight of one checkpoint
(goal < 60 s on 2 cores), and the base-SVD cache: a second analysis reuses the base model's SVDs computed
for the first (goal: >= 3x faster; the same checkpoint cold then warm, one per method). Uses the final
checkpoints of a finished sweep (default runs/quick, what `make demo` leaves).

    python -m bench.analysis [--sweep-dir runs/quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import record
from orchestrator.config import ModelConfig
from orchestrator.results import sweep_geometry as geometry
from orchestrator.storage.sweep_dir import Status, SweepDir
from orchestrator.trials import checkpoints as checkpoint_files, models

ROOT = Path(__file__).resolve().parent.parent


def spectral_seconds(checkpoint: str) -> tuple[float, int]:
    trained, _, meta = checkpoint_files.load_trained(Path(checkpoint))
    model_cfg = ModelConfig(**meta["model"])
    base_state = models.load(model_cfg)[0].state_dict()
    fingerprint = models.fingerprint(model_cfg)
    began = time.perf_counter()
    modules, _ = geometry.weight_metrics(trained, base_state, fingerprint)
    return time.perf_counter() - began, len(modules)


def first_checkpoint_per_method(where: SweepDir) -> dict[str, str]:
    found: dict[str, str] = {}
    for result in where.collect():
        if result["status"] == Status.COMPLETED and result["method"] not in found:
            found[result["method"]] = result["checkpoints"][-1]["path"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep-dir", default=str(ROOT / "runs" / "quick"))
    args = parser.parse_args()
    where = SweepDir.open(args.sweep_dir)
    cfg = where.load_config()
    checkpoints = first_checkpoint_per_method(where)
    # each method's checkpoint twice, cold cache then warm: identical per-trial work, so each ratio is the
    # cache's alone; their sums are a sweep whose later trials all find the base SVDs cached
    cold, warm, modules = {}, {}, 0
    for method, checkpoint in checkpoints.items():
        geometry.clear_svd_cache()
        cold[method], modules = spectral_seconds(checkpoint)
        warm[method], _ = spectral_seconds(checkpoint)
    first_method, first_checkpoint = next(iter(checkpoints.items()))
    record("analysis_spectral_one_checkpoint", "seconds for all adapted weights of one checkpoint (lower is better)",
           cold[first_method], 60.0, "< 60 s on 2 cores (baseline = the 60 s budget)", cold[first_method] < 60.0,
           modules=modules, checkpoint=first_checkpoint, method=first_method)
    record("analysis_base_svd_cache", "seconds of spectral analysis with the base SVDs cached vs computed, summed "
           "over one checkpoint per method (lower is better)", sum(warm.values()), sum(cold.values()),
           ">= 3x faster (ratio <= 0.33)", sum(warm.values()) <= sum(cold.values()) / 3, modules=modules,
           speedup_per_method={m: round(cold[m] / warm[m], 2) for m in cold}, cold_s=cold, warm_s=warm)
    began = time.perf_counter()
    geometry.checkpoint_geometry(cfg, first_checkpoint, layer_stride=5, max_tokens=256)
    full_s = time.perf_counter() - began
    record("analysis_spectral_and_activations", "seconds, spectral + activation analysis of one checkpoint",
           full_s, cold[first_method], "reported (no goal): activations on every 5th layer, 256 tokens per kind", True)


if __name__ == "__main__":
    main()
