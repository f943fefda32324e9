"""Where a trial's training runs: in the Tune trial's own process (one worker), or on several data-parallel
ranks, each a Ray Train (V2) worker, started by the Tune trial (`resources.workers_per_trial` > 1).

Every rank runs the same DeepSpeed loop on its shard of each global batch (orchestrator.trials.trainer). Rank 0 runs
the whole trial (base scores, each checkpoint scored, the result JSON, live tracking) exactly as a one-worker
trial does; ranks > 0 train and, with inline evaluation, score their share of the same chunks at the same
points (`trial.replica`), writing nothing. So checkpoints, results and MLflow runs are the same whatever the
world size. A worker that dies makes Ray Train restart the worker group (`failure.max_failures`
times), and the trial resumes from its last verified checkpoint as any interrupted trial does; its result
counts the attempts. The Tune trial itself reserves no resources then: Ray Train places the workers (gang
scheduled, one placement group per trial), and reads the result rank 0 wrote when they are done.
"""
from __future__ import annotations

import os
from typing import Any

from orchestrator import process
from orchestrator.config import SweepConfig
from orchestrator.storage.sweep_dir import SweepDir, TrialDir
from orchestrator.tracking import mlflow_runs
from orchestrator.trials import trial

# With inline evaluation every rank scores its share of the chunks, so a rank waits for the others only by
# the imbalance of the shares, at most about one chunk's scoring: 32 MATH-500 prompts x 16 samples x up to
# 8192 tokens take about an hour on the HF decoder at 7B, which torch's default 30-minute collective
# timeout would cut; two hours still ends a real hang on the same day.
COLLECTIVE_TIMEOUT_S = 2 * 3600


def run_here(cfg: SweepConfig, method: str, setting: dict[str, Any], trial_dir: TrialDir, context: dict[str, Any],
             on_scores: trial.Scores | None = None) -> dict[str, Any]:
    """The trial in this process, streaming into its MLflow run when the sweep tracks live."""
    live = mlflow_runs.LiveRun(cfg) if mlflow_runs.live_from_workers(cfg) else None

    def scored(step: int, point: dict[str, Any], params: dict[str, Any]) -> None:
        if live is not None:
            live.log_checkpoint(point)
        if on_scores is not None:
            on_scores(step, point, params)

    try:
        return trial.run(cfg, method, setting, trial_dir, context=context, on_scores=scored,
                         on_start=live.start if live else None, on_step=live.log_step if live else None)
    finally:
        if live is not None:
            live.close()
        process.return_freed_memory()  # this worker runs the sweep's next trial


def fit(cfg: SweepConfig, method: str, setting: dict[str, Any], trial_dir: TrialDir,
        context: dict[str, Any]) -> dict[str, Any] | None:
    """Train the trial on `workers_per_trial` Ray Train workers; returns the result rank 0 wrote."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = cfg.resources
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": cfg.model_dump(), "method": method, "setting": setting,
                           "trial_dir": str(trial_dir.root),
                           "context": {**context, "driver_pid": os.getpid()}},  # the same across group restarts
        torch_config=TorchConfig(backend="nccl" if res.gpus_per_worker else "gloo", timeout_s=COLLECTIVE_TIMEOUT_S),
        scaling_config=ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=trial_dir.trial_id, storage_path=str(trial_dir.train_runs),
                             failure_config=FailureConfig(max_failures=cfg.failure.max_failures)))
    trainer.fit()
    return trial_dir.read_result()


def _worker(config: dict[str, Any]) -> None:
    """One rank of a multi-worker trial (runs in a Ray Train worker, its process group already set up)."""
    import ray
    import torch

    cfg = SweepConfig.model_validate(config["cfg"])
    trial_dir = SweepDir.of(cfg).trial(os.path.basename(config["trial_dir"]))
    me = {"rank": torch.distributed.get_rank(), "node_id": ray.get_runtime_context().get_node_id(),
          "hostname": os.uname().nodename, "pid": os.getpid()}
    ranks: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(ranks, me)  # the result says where each rank ran
    if me["rank"] == 0:
        run_here(cfg, config["method"], config["setting"], trial_dir, {**config["context"], "workers": ranks})
    else:
        trial.replica(cfg, config["method"], config["setting"], trial_dir)
