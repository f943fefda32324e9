"""One trial: base model + method -> train -> score each checkpoint -> one result JSON.

The base model is scored once per (weights, suite, items) and cached (orchestrator.trials.scoring), so gain and
forgetting are differences to numbers every trial shares. The result JSON is written locally first
(atomically), so a tracking server that is down never costs a result.
"""
from __future__ import annotations

import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any, Callable


from evals import sources, suites, uncertainty
from methods import registry
from orchestrator.config import ConfigError, SweepConfig, config_hash
from orchestrator.process import package_versions, peak_rss_mb, rank_and_world, rank_zeros
from orchestrator.storage.sweep_dir import SCHEMA_VERSION, Status, TrialDir, has_final_point
from orchestrator.trials import checkpoints, models, regimes, trainer
from orchestrator.trials.scoring import HandOff, base_scores, deltas, evaluate, take_replies

# where checkpoints are scored, not what: the scores are the same either way, so these stay out of the hash
EVAL_PLACEMENT = ("mode", "pool_size", "cpus_per_actor", "gpus_per_actor")
Scores = Callable[[int, dict[str, Any], dict[str, Any]], None]  # (step, the checkpoint's record, params)


class TrialStopped(Exception):
    """The sweep's scheduler stopped the trial at a checkpoint (Tune ends a stopped trial's thread with
    SystemExit at its next report); the trial's checkpoints so far stay valid."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped early at step {step}")
        self.step = step


def trial_config(cfg: SweepConfig, method: str, setting: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines a trial's outcome; its hash names the trial and tags its checkpoints."""
    return {"model": cfg.model.model_dump(), "train": cfg.train.model_dump(),
            "eval": cfg.eval.model_dump(exclude=set(EVAL_PLACEMENT)),
            "method": method, "setting": registry.get(method).for_run(setting, cfg.train.steps)}


def run(cfg: SweepConfig, method: str, setting: dict[str, Any], trial_dir: TrialDir,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        on_phase: Callable[[str], None] | None = None, context: dict[str, Any] | None = None,
        on_scores: Scores | None = None, on_start: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one trial and write `trial_dir/result.json`. User errors (ConfigError) propagate; any other
    failure is recorded in the result as status "failed" with its reason, and the result is returned.
    Run again in the same dir (a retry, a resumed sweep), a completed trial of the same config returns its
    result at once, and an interrupted one resumes from its last verified checkpoint.

    `on_start` sees the result as it begins (identity, config, context), before the model loads.
    `on_scores` hears each scored checkpoint (a sweep reports it to Tune); if it raises SystemExit, the
    scheduler stopped the trial: the result is written with status "stopped_early" and its last
    checkpoint as the final point, and SystemExit is raised again for Tune."""
    phase = on_phase or (lambda _: None)
    began = time.perf_counter()
    spec = trial_config(cfg, method, setting)
    previous = _previous_result(trial_dir, config_hash(spec))
    if previous is not None and has_final_point(previous):  # completed, or stopped early: decided already
        return previous
    result: dict[str, Any] = {"schema": SCHEMA_VERSION, "trial_id": trial_dir.trial_id, "trial_dir": str(trial_dir.root),
                              "status": Status.RUNNING,
                              "method": method, "setting": spec["setting"], "config": spec,
                              "config_hash": config_hash(spec), "checkpoints": [], "timings": {},
                              "versions": package_versions(), "host": platform.node(), "pid": os.getpid(),
                              "started_at": time.time(), **(context or {})}
    if previous is not None:
        result["checkpoints"] = previous.get("checkpoints", [])
        result["train_log"] = previous.get("train_log", [])
        result["attempts"] = previous.get("attempts", 1) + 1
    if on_start is not None:
        on_start(result)
    stopped = None
    try:
        _execute(cfg, spec, trial_dir, result, on_step, phase, on_scores)
    except TrialStopped as stop:
        result.update(status=Status.STOPPED_EARLY, stopped_at_step=stop.step)
        _finalise(result)
        stopped = stop
    except ConfigError:
        raise
    except (suites.TaskError, sources.SourceError) as err:  # bad task data is the user's to fix
        raise ConfigError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - a crashed trial is a recorded outcome, not a crashed sweep
        result["status"] = Status.FAILED
        result["failure_reason"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc(limit=8)
    result["timings"]["total_s"] = time.perf_counter() - began
    result["ended_at"] = time.time()  # wall clock, with started_at: the MLflow run's start and end
    result["peak_rss_mb"] = peak_rss_mb()
    trial_dir.write_result(result)
    if stopped is not None:
        raise SystemExit(0) from stopped
    return result


def _finalise(result: dict[str, Any]) -> None:
    """The trial's final point: its last scored checkpoint."""
    if result["checkpoints"]:
        last = result["checkpoints"][-1]
        kept = ("step", *uncertainty.DELTAS, *(f"{name}_ci" for name in uncertainty.DELTAS))
        result["final"] = {k: last[k] for k in kept if k in last} | {
            "target": last["target"]["score"], "retention": last["retention"]["score"]}


def _previous_result(trial_dir: TrialDir, expected_hash: str) -> dict[str, Any] | None:
    """An earlier attempt's result in this dir, if it belongs to the same trial config."""
    previous = trial_dir.read_result()
    return previous if previous is not None and previous.get("config_hash") == expected_hash else None


def _execute(cfg: SweepConfig, spec: dict[str, Any], trial_dir: TrialDir, result: dict[str, Any],
             on_step: Callable[[int, dict[str, float]], None] | None, phase: Callable[[str], None],
             on_scores: Scores | None) -> None:
    timings = result["timings"]
    clock = time.perf_counter()
    phase("loading model")
    model, tokenizer = models.load(cfg.model)
    timings["load_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    phase("scoring base model (cached after the first time)")
    base = base_scores(model, tokenizer, cfg.model, cfg.eval)
    timings["base_eval_s"] = time.perf_counter() - clock
    trial_dir.write_replies("base", take_replies(base))
    result["base"] = base

    total = sum(p.numel() for p in model.parameters())
    wrapped, pairs, resume, start_step = _wrap_for_training(cfg, spec, trial_dir, model, tokenizer)
    if start_step:
        result["resumed_from_step"] = start_step
    result["checkpoints"] = [c for c in result["checkpoints"] if c["step"] <= start_step]
    result["train_log"] = [r for r in result.get("train_log", []) if r["step"] <= start_step]
    trainable = registry.count_trainable(wrapped)
    result["params"] = {"trainable": trainable, "total": total, "fraction": trainable / total}

    eval_seconds = 0.0
    handoff = None
    if cfg.eval.mode == "pool":
        handoff = HandOff(cfg.output_dir, tokenizer, cfg.eval, f"{trial_dir.trial_id}/{result.get('attempts', 1)}")

    def record_scores(step: int, directory: Path, scores: dict[str, Any]) -> None:
        trial_dir.write_replies(directory.name, take_replies(scores))
        point = {"step": step, "loss": checkpoints.read_meta(directory)["loss"], "path": str(directory),
                 "bytes": checkpoints.sizes(directory), **scores, **deltas(scores, base)}
        result["checkpoints"] = sorted([*result["checkpoints"], point], key=lambda c: c["step"])
        trial_dir.write_result(result)  # partial progress survives a crash
        if on_scores is not None:
            try:
                on_scores(step, point, result["params"])
            except SystemExit:
                raise TrialStopped(step) from None

    def on_checkpoint(step: int, directory: Path) -> None:
        """Inline: score it while training waits. Pool: hand it off, and record those already scored."""
        nonlocal eval_seconds
        clock = time.perf_counter()
        if handoff is None:
            phase(f"scoring checkpoint step {step}")
            scores = _checkpoint_scores(cfg, wrapped, tokenizer, directory)
            eval_seconds += time.perf_counter() - clock
            record_scores(step, directory, scores)
        else:
            handoff.submit(step, directory)
            for scored in handoff.scored(wait=False):
                record_scores(*scored)
            eval_seconds += time.perf_counter() - clock
        phase("training")

    # saved but never scored before an interruption: inline, only the one whose weights the model now holds
    # (which every rank scores with rank 0: its list is theirs)
    unscored = _unscored_checkpoints(trial_dir, result, start_step if handoff is None else 0, start_step)
    for step, directory in (unscored if handoff is not None else rank_zeros(unscored)):
        on_checkpoint(step, directory)

    def log_step(step: int, record: dict[str, float]) -> None:
        result["train_log"].append(record)  # in the partial result too, so a resumed trial keeps it
        if on_step:
            on_step(step, record)

    phase("training")
    outcome = trainer.train(wrapped, make_regime(cfg, tokenizer, pairs), cfg.train, trial_dir,
                            _checkpoint_meta(cfg, spec), on_checkpoint, log_step, start_step=start_step,
                            resume_from=resume[0] if resume is not None else None)
    if outcome.resumed:
        result["resumed"] = outcome.resumed  # exact, or from the weights alone
    timings["train_s"], timings["eval_s"] = outcome.seconds, eval_seconds  # eval_s: training waited on it
    if handoff is not None:
        clock = time.perf_counter()
        phase("collecting the checkpoints' scores")
        for scored in handoff.scored(wait=True):
            record_scores(*scored)
        timings["eval_collect_s"] = time.perf_counter() - clock
    result.update(status=outcome.status, failure_reason=outcome.failure_reason, steps=outcome.steps,
                  tokens=outcome.tokens, world_size=outcome.world_size, global_batch=outcome.global_batch,
                  tokens_per_s=outcome.tokens / outcome.seconds if outcome.seconds else 0.0)
    _finalise(result)


def _wrap_for_training(cfg: SweepConfig, spec: dict[str, Any], trial_dir: TrialDir, model: Any,
                       tokenizer: Any) -> tuple[Any, list, tuple | None, int]:
    """(the method-wrapped model, training pairs, the checkpoint resumed from, its step): the same on every
    rank of a trial, as each reads the same checkpoint and seeds the same initialisation."""
    pairs = suites.training_pairs(suites.load_task(cfg.train.task), tokenizer, cfg.train.train_items)
    if cfg.train.overlong == "drop":
        pairs = regimes.fitting(pairs, cfg.train.max_length)
    first_batch = regimes.collate(pairs[:cfg.train.batch_size], cfg.train.max_length, tokenizer.pad_token_id)
    resume = checkpoints.latest_valid(trial_dir)
    wrapped = registry.wrap(model, spec["method"], spec["setting"], cfg.model.target_modules, cfg.train.seed,
                            init_batch=first_batch,  # gradient-based inits (KeepLoRA) read one batch
                            restore_from=resume[1] if resume else None)
    start_step = 0
    if resume is not None:
        registry.load_trainable_state(wrapped, resume[1])
        start_step = resume[2]["step"]
    return wrapped, pairs, resume, start_step


def _checkpoint_meta(cfg: SweepConfig, spec: dict[str, Any]) -> dict[str, Any]:
    """What every checkpoint of the trial says about where it comes from."""
    return {"method": spec["method"], "setting": spec["setting"], "model": cfg.model.model_dump(),
            "seed": cfg.train.seed, "config_hash": config_hash(spec)}


def replica(cfg: SweepConfig, method: str, setting: dict[str, Any], trial_dir: TrialDir) -> None:
    """A trial's rank > 0 in a multi-worker trial: the same model, wrapping and resume point as rank 0
    (which runs `run`), training on its shard of each global batch. With inline evaluation it scores its
    share of the base model's and each checkpoint's chunks, at the same points as rank 0; it writes nothing:
    rank 0 owns the result and the files."""
    spec = trial_config(cfg, method, setting)
    previous = _previous_result(trial_dir, config_hash(spec))
    if previous is not None and has_final_point(previous):  # rank 0 returns it as well, training nothing
        return
    model, tokenizer = models.load(cfg.model)
    base_scores(model, tokenizer, cfg.model, cfg.eval)
    wrapped, pairs, resume, start_step = _wrap_for_training(cfg, spec, trial_dir, model, tokenizer)

    def score_share(_step: int, directory: Path) -> None:
        _checkpoint_scores(cfg, wrapped, tokenizer, directory)

    inline = cfg.eval.mode == "inline"
    if inline:
        for step, directory in rank_zeros(None):  # rank 0's unscored checkpoints
            score_share(step, directory)
    trainer.train(wrapped, make_regime(cfg, tokenizer, pairs), cfg.train, trial_dir, _checkpoint_meta(cfg, spec),
                  score_share if inline else None, start_step=start_step,
                  resume_from=resume[0] if resume is not None else None)


def _checkpoint_scores(cfg: SweepConfig, model: Any, tokenizer: Any, directory: Path) -> dict[str, Any]:
    """A checkpoint's scores; every rank of a data-parallel trial calls it and scores its share. Under
    ZeRO-3 the engine's module holds only its partition of each large weight and gathers the rest in
    collectives every rank must join in one order, which ranks scoring different chunks cannot: they score
    the checkpoint as saved instead (as the evaluation service does), on the engine's device, once rank 0
    has written it (rank 0 calls this after writing; `rank_zeros` is the barrier). A world of one gathers
    alone, so it scores the live module and loads nothing."""
    partitioned = any(hasattr(p, "ds_id") for p in model.parameters())  # DeepSpeed tags ZeRO-3 parameters
    if not partitioned or rank_and_world()[1] == 1:
        return evaluate(model, tokenizer, cfg.eval)
    rank_zeros(None)
    saved, _ = checkpoints.load_for_eval({"checkpoint": str(directory)})
    return evaluate(saved.to(next(model.parameters()).device), tokenizer, cfg.eval)


def _unscored_checkpoints(trial_dir: TrialDir, result: dict[str, Any], first: int, last: int) -> list[tuple[int, Path]]:
    """A resumed trial's saved checkpoints of steps first..last that have no scores yet: the one it was
    scoring when interrupted, or (eval.mode: pool) those that were still with the service."""
    scored = {c["step"] for c in result["checkpoints"]}
    found = []
    for directory in trial_dir.checkpoint_dirs():
        try:
            step = checkpoints.read_meta(directory)["step"]
        except (checkpoints.CheckpointError, ValueError, OSError):
            continue  # never completed: not a checkpoint
        if first <= step <= last and step not in scored:
            found.append((step, directory))
    return found


def make_regime(cfg: SweepConfig, tokenizer: Any, pairs: list) -> Any:
    if cfg.train.regime == "sft":
        return regimes.SFT(pairs, cfg.train, tokenizer.pad_token_id)
    task = suites.load_task(cfg.train.task)
    return regimes.GRPO(suites.rl_prompts(task, tokenizer, cfg.train.train_items), cfg.train, tokenizer.pad_token_id,
                        tokenizer.eos_token_id, lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                        suites.verifiable_reward(task))
