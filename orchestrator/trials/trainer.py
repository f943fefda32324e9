"""The training loop on a DeepSpeed engine (ZeRO 0-3), CPU or GPU, with checkpoints along the path.

One loop you can hold in your head: micro-batch -> loss (the regime's: SFT or GRPO, orchestrator.trials.regimes)
-> engine.backward -> engine.step. Every `checkpoint_every` optimizer steps (and at the end) the trainable
state is saved (orchestrator.trials.checkpoints): that trajectory is what analysis and rewinding read.
On a machine without a GPU, DeepSpeed runs on its CPU accelerator with the gloo backend; we set the
single-process rendezvous variables ourselves so DeepSpeed does not go looking for MPI.

Data parallel (a trial on several Ray Train workers, `resources.workers_per_trial`): every rank runs this
same loop on its shard of each global batch (the regime's stream, micro-batch k of the seeded order going to
rank k mod world), so W workers at micro-batch b take the steps one worker takes at micro-batch b with W x
the accumulation. The logged loss and metrics are means over ranks; only rank 0 writes files.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

if not torch.cuda.is_available():  # must precede the deepspeed import, or it probes for accelerators
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from orchestrator.config import TrainConfig  # noqa: E402
from orchestrator.process import free_port, rank_and_world  # noqa: E402
from orchestrator.storage.sweep_dir import Status, TrialDir  # noqa: E402
from orchestrator.trials import checkpoints, resume  # noqa: E402


@dataclass
class TrainResult:
    status: str = Status.COMPLETED  # or FAILED
    failure_reason: str | None = None
    steps: int = 0
    log: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    seconds: float = 0.0  # training only: time spent in on_checkpoint (evaluation) is excluded
    tokens: int = 0
    resumed: str | None = None  # "exact" (optimizer, RNG and data state restored) or "weights" (weights only)
    world_size: int = 1
    global_batch: int = 0  # examples (SFT) or prompts (GRPO) per optimizer step: micro x accum x world


# --------------------------------------------------------------------------------------- distributed


def init_distributed() -> None:
    """Join (or, alone, create) the process group. Launchers (torchrun, Ray Train) set RANK and friends
    for a world of several processes; a world of one gets its own rendezvous on a fresh loopback port,
    never one inherited from a parent process (whose own group may still hold that port)."""
    import deepspeed

    if not torch.cuda.is_available():
        # also where a launcher (Ray Train) made the group already: DeepSpeed's engine loads the op anyway,
        # and unguarded its load races with a guarded one in another process (which then removes the
        # lock file the unguarded load holds: "No such file or directory: .../lock")
        load_shm_comm_op()
    if torch.distributed.is_initialized():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo", verbose=False)


def _rank_means(values: list[float], world: int) -> list[float]:
    """Each value averaged over the ranks in one all-reduce (the step's loss and metrics are the global
    batch's, not rank 0's shard's)."""
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return (tensor / world).tolist()


SHM_COMM_OP = "deepspeed_shm_comm"


def load_shm_comm_op() -> None:
    """Load DeepSpeed's CPU shared-memory collective op (its backend loads it on every start) under a
    kernel lock, clearing what a killed process left.

    torch JIT-builds and loads the op under a bare lock file (`<build dir>/lock`, torch's FileBaton),
    held for the ninja check on every load (about a second) and for the whole build (about a minute on a
    2-core machine). A trial killed inside that window (SIGKILL, a lost node, a Ctrl-C) leaves the file,
    and every later DeepSpeed start on the machine waits on it forever: FileBaton records no owner, so
    nothing can tell it is stale. We hold an `fcntl.flock` around the load instead; the kernel drops it
    when its holder dies, so a lock file found while we hold the flock was left by a dead process and
    is removed. DeepSpeed caches the loaded op per process, so its own load then takes no lock at all.
    """
    import fcntl

    from deepspeed.comm.torch import build_shm_op

    build_dir = shm_comm_build_dir()
    with open(build_dir.parent / f"{SHM_COMM_OP}.flock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released by the kernel, also when this process dies
        (build_dir / "lock").unlink(missing_ok=True)
        build_shm_op()


def shm_comm_build_dir() -> Path:
    """Where torch builds the op. Its own answer (a private helper, which also creates the folder) rather
    than a copy of its rules (TORCH_EXTENSIONS_DIR, else py<ver>_<cpu|cuXY|rocmXY> under the cache)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(SHM_COMM_OP, verbose=False))


def deepspeed_config(cfg: TrainConfig, dtype: torch.dtype) -> dict[str, Any]:
    """DeepSpeed builds the optimizer (AdamW). On CPU it uses torch's AdamW kernel (`torch_adam`) rather
    than JIT-compiling its fused CPU op, which costs ~2 min per fresh machine for no speed-up here."""
    on_gpu = torch.cuda.is_available()
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.effective_lr, "betas": list(cfg.betas), "eps": 1e-8,
                                                  "weight_decay": cfg.weight_decay, "torch_adam": not on_gpu}},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def warmup_cosine(total: int, warmup_ratio: float, decay: bool = True) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to zero, the paper's SFT schedule (10% warm-up); with `decay` off,
    the rate stays flat after the warm-up (its RL schedule: constant)."""
    warm = max(1, int(round(total * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if not decay:
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ---------------------------------------------------------------------------------------------- train


def _grad_norm(engine: Any, params: list[nn.Parameter]) -> float:
    norm = engine.get_global_grad_norm()
    if norm is None:  # ZeRO-0 keeps plain .grad tensors and does not record the norm
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        norm = torch.stack(grads).norm() if grads else torch.tensor(0.0)
    return float(norm)


def train(model: nn.Module, regime: Any, cfg: TrainConfig, trial_dir: TrialDir, meta: dict[str, Any],
          on_checkpoint: Callable[[int, Path], None] | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None, start_step: int = 0,
          resume_from: Path | None = None) -> TrainResult:
    """Train `model` in place up to `cfg.steps` optimizer steps; `regime` (orchestrator.trials.regimes: SFT or
    GRPO) turns each micro-batch into a loss. A non-finite loss stops the run as failed, with the step in
    the reason; checkpoints already written stay valid.

    `start_step` > 0 continues a run whose weights were restored from that step's checkpoint
    (`resume_from`): the LR schedule and the data order pick up where they were, and when the checkpoint
    holds a resume state (`train.resume_state`), so do AdamW's moments and step and every RNG, which makes
    the continued run equal to an uninterrupted one bit for bit; without it the moments restart at zero."""
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    init_distributed()
    torch.manual_seed(cfg.seed)
    rank, world = rank_and_world()
    regime.shard(rank, world)
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = next(model.parameters()).dtype
    schedule = warmup_cosine(cfg.steps, cfg.warmup_ratio, decay=cfg.schedule == "cosine")
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=params, config=deepspeed_config(cfg, dtype),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s + start_step)))
    device = engine.device
    result = TrainResult(steps=start_step, world_size=world,
                         global_batch=regime.micro_batch * cfg.grad_accum * world)
    regime.skip(start_step * cfg.grad_accum)  # the batches the restored steps already consumed
    if start_step:
        state = checkpoints.load_resume(resume_from) if resume_from is not None else None
        if state is not None:
            resume.restore(engine, model, regime, *state)
        result.resumed = "exact" if state is not None else "weights"
        if rank == 0 and resume_from is not None:  # what a kill between write and drop left behind
            _drop_older_resume_states(cfg, resume_from, trial_dir)
    start = time.perf_counter()
    outside = 0.0  # seconds spent in the checkpoint callback
    model.train()
    try:
        for step in range(start_step + 1, cfg.steps + 1):
            step_began = time.perf_counter()
            losses, extras = [], []
            for _ in range(cfg.grad_accum):
                loss, extra = regime.loss(engine, device)
                if _rank_means([float(torch.isfinite(loss))], world)[0] < 1.0:  # every rank stops together
                    result.status, result.failure_reason = Status.FAILED, f"non-finite loss ({loss.item()}) at step {step}"
                    return result
                engine.backward(loss)
                grad_norm = _grad_norm(engine, params) if engine.is_gradient_accumulation_boundary() else 0.0
                engine.step()
                losses.append(loss.item())
                extras.append(extra)
            names = [k for k in extras[0] if k != "tokens"]
            loss_mean, tokens, *metrics = _rank_means(
                [sum(losses) / len(losses), sum(e.get("tokens", 0.0) for e in extras),
                 *(sum(e[k] for e in extras) / len(extras) for k in names)], world)
            result.tokens += int(round(tokens * world))
            record = {"step": step, "loss": loss_mean, "lr": engine.get_lr()[0],
                      "grad_norm": grad_norm, "step_s": time.perf_counter() - step_began, **dict(zip(names, metrics))}
            result.log.append(record)
            result.steps = step
            if on_step:
                on_step(step, record)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                directory = trial_dir.checkpoint(step)
                _write_checkpoint(engine, model, regime, cfg, directory, step, {**meta, **record}, writes=rank == 0)
                if rank == 0:
                    _drop_older_resume_states(cfg, directory, trial_dir)
                result.checkpoints.append(directory)
                if on_checkpoint:
                    began = time.perf_counter()
                    on_checkpoint(step, directory)
                    outside += time.perf_counter() - began
                    model.train()
        if cfg.resume_state == "last" and rank == 0:  # completed: nothing left to resume (this run's or an earlier one's)
            for directory in trial_dir.checkpoint_dirs():
                checkpoints.remove_resume(directory)
    finally:
        result.seconds = time.perf_counter() - start - outside
        if hasattr(engine, "destroy"):
            engine.destroy()
    return result


def _write_checkpoint(engine: Any, model: nn.Module, regime: Any, cfg: TrainConfig, directory: Path, step: int,
                      meta: dict[str, Any], writes: bool = True) -> None:
    """The resume state before the weights and their JSON, so a checkpoint that verifies always has its resume
    state wherever a kill lands. A write that fails (a full disk) takes the resume state it wrote with it: it
    belongs to no checkpoint, and the space is what the trial needs to record its failure. Every rank
    gathers (ZeRO partitions, per-rank random states); only the rank that `writes` touches the files."""
    try:
        if cfg.resume_state != "none":
            state = resume.capture(engine, model, regime, step)
            if writes:
                checkpoints.save_resume(directory, *state)
        checkpoints.save(model, directory, meta, cfg.zero_stage, write=writes)
    except OSError:
        checkpoints.remove_resume(directory)
        raise


def _drop_older_resume_states(cfg: TrainConfig, directory: Path, trial_dir: TrialDir) -> None:
    """With `resume_state: last`, every other checkpoint's resume state goes once `directory`'s is whole.
    The new state is written before the old ones go, so a kill never leaves a trial without one; a kill in
    between leaves two, and the next checkpoint or a resume from `directory` removes the leftovers. So "one
    state, the newest" holds at every checkpoint and every resume, by construction, not by timing."""
    if cfg.resume_state == "last":
        for older in trial_dir.checkpoint_dirs():
            if older != directory:
                checkpoints.remove_resume(older)
