"""Analysis cost on the default model: spectral analysis of every adapted weight of one checkpoint
(goal < 60 s on 2 cores), and the base-SVD cache: a second analysis reuses the base model's SVDs computed
for the first (goal: >= 3x faster; the same checkpoint both times, so only the cache differs). Uses the
final checkpoint of a finished sweep (default runs/quick, what `make demo` leaves).

    python -m bench.analysis [--sweep-dir runs/quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import record
from orchestrator import geometry, models, sweep, trial
from orchestrator.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent


def spectral_seconds(checkpoint: str) -> tuple[float, int]:
    trained, _, meta = trial.load_trained(Path(checkpoint))
    model_cfg = ModelConfig(**meta["model"])
    base_state = models.load(model_cfg)[0].state_dict()
    fingerprint = models.fingerprint(model_cfg)
    began = time.perf_counter()
    modules, _ = geometry.weight_metrics(trained, base_state, fingerprint)
    return time.perf_counter() - began, len(modules)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep-dir", default=str(ROOT / "runs" / "quick"))
    args = parser.parse_args()
    cfg = sweep.load_sweep_dir(args.sweep_dir)
    finals = [r["checkpoints"][-1]["path"] for r in sweep.collect(cfg) if r["status"] == "completed"]
    # the same checkpoint twice: identical per-trial work, so the ratio is the cache's alone (two different
    # trials would also compare two methods' merge costs)
    first_s, modules = spectral_seconds(finals[0])   # computes and caches the base SVDs
    second_s, _ = spectral_seconds(finals[0])        # reuses them
    record("analysis_spectral_one_checkpoint", "seconds for all adapted weights of one checkpoint (lower is better)",
           first_s, 60.0, "< 60 s on 2 cores (baseline = the 60 s budget)", first_s < 60.0, modules=modules,
           checkpoint=finals[0])
    record("analysis_base_svd_cache", "seconds, second trial's spectral analysis vs the first's (lower is better)",
           second_s, first_s, ">= 3x faster (ratio <= 0.33)", second_s <= first_s / 3, modules=modules)
    began = time.perf_counter()
    geometry.checkpoint_geometry(cfg, finals[0], layer_stride=5, max_tokens=256)
    full_s = time.perf_counter() - began
    record("analysis_spectral_and_activations", "seconds, spectral + activation analysis of one checkpoint",
           full_s, first_s, "reported (no goal): activations on every 5th layer, 256 tokens per kind", True)


if __name__ == "__main__":
    main()
