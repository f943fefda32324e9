"""Ray Tune runs a multi-objective Optuna search over methods, budgets and hyper-parameters.

The driver resolves every (method, budget) to a concrete setting up front (`plan`), then hands Ray Tune
the define-by-run Optuna space (`space`). Each Tune trial runs `trial.run` in its own worker and reports
each checkpoint's objectives as it is scored and every objective in one final result (OptunaSearch reads
only the last result in multi-objective mode). The Optuna study lives in a SQLite database (Optuna's
RDBStorage) in the sweep dir and Tune's experiment state under `ray/`, so `--resume` continues a killed
sweep without repeating finished trials: a finished trial's dir already holds its completed result.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from evals import service
from orchestrator.config import SweepConfig
from orchestrator.files import atomic_write_json
from orchestrator.results import sweep_analysis
from orchestrator.storage.sweep_dir import SweepDir, has_final_point
from orchestrator.sweep import workers
from orchestrator.sweep.placement import alive_nodes, check_placement, connect, probe, trial_resources
from orchestrator.sweep.plan import Plan, make_plan, num_samples, sampler_name
from orchestrator.sweep.space import DefineByRun, decode, make_sampler
from orchestrator.sweep.takeover import (abandon_leftovers, continue_interrupted, fail_orphaned_trials,
                                         reuse_duplicate, same_config_trials, trial_config_hash)
from orchestrator.trials import scoring


def _trainable(params: dict[str, Any], sweep: dict[str, Any]) -> None:
    """Runs inside a Ray worker: one trial (here, or on its Ray Train workers), reporting each checkpoint's
    objectives as it is scored (what early stopping reads; one-worker trials) and then every objective of
    the finished trial (what OptunaSearch records)."""
    from ray import tune

    cfg = SweepConfig.model_validate(sweep)
    plan = make_plan(cfg)
    sweep_dir = SweepDir.of(cfg).for_trial()  # on object storage: a temp mirror of this trial's own
    try:
        result, labels = _train(cfg, params, plan, sweep_dir)
    finally:  # each write uploaded what it wrote: the mirror goes however the trial ended (failed, stopped)
        sweep_dir.release()
    report = {name: value for name, value in sweep_analysis.objective_values(result).items() if value is not None}
    tune.report({**report, **labels})


def _train(cfg: SweepConfig, params: dict[str, Any], plan: Plan, sweep_dir: SweepDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trial's final result (a finished duplicate's, or one trained here or on Ray Train workers) and
    the labels its reports carry; a trial with no final point raises, so Tune retries it."""
    import ray
    from ray import tune

    from orchestrator.sweep.early_stop import STEP_KEY, checkpoint_objectives

    method, setting, trial_cfg, budget_label = decode(params, plan, cfg)
    trial_dir = sweep_dir.trial(tune.get_context().get_trial_id())
    trial_dir.fetch()  # a retried trial (maybe on another node) continues from what it uploaded
    where = {"node_id": ray.get_runtime_context().get_node_id(), "budget": budget_label}
    labels = {"trial_dir": str(trial_dir.root), "method": method, "setting": json.dumps(setting, sort_keys=True),
              "budget": budget_label or 0.0, "node_id": where["node_id"], "hostname": os.uname().nodename}

    def report_checkpoint(step: int, point: dict[str, Any], trainable: dict[str, Any]) -> None:
        tune.report({**checkpoint_objectives(point, trainable), STEP_KEY: step, **labels})

    siblings = same_config_trials(sweep_dir, trial_config_hash(trial_cfg, method, setting), trial_dir)
    continued = continue_interrupted(sweep_dir, siblings, trial_dir)
    if continued:
        where["continues"] = continued
    result = reuse_duplicate(siblings, trial_dir)
    if result is None and cfg.resources.workers_per_trial > 1:
        result = workers.fit(trial_cfg, method, setting, trial_dir, where) or {}
    elif result is None:
        result = workers.run_here(trial_cfg, method, setting, trial_dir, where, report_checkpoint)
    if not has_final_point(result):  # Tune retries up to failure.max_failures, then records the error
        raise RuntimeError(f"trial {trial_dir.trial_id} failed: {result.get('failure_reason')}")
    return result, labels


def make_scheduler(cfg: SweepConfig, plan: Plan) -> Any:
    """None (every trial trains to its last step) or the multi-objective early-stopping scheduler."""
    stop = cfg.search.early_stop
    if stop.kind == "none":
        return None
    from orchestrator.sweep.early_stop import ParetoRungs

    longest = max(plan.steps or [cfg.train.steps])
    return ParetoRungs(cfg.output_dir, [(o.name, o.mode) for o in cfg.search.objectives],
                       stop.grace_steps or cfg.train.checkpoint_every, stop.reduction_factor, longest, stop.kind,
                       cfg.search.seed)


def build_tuner(cfg: SweepConfig, plan: Plan, resume: bool, callbacks: list[Any]) -> Any:
    import optuna
    from optuna.storages import RDBStorage
    from ray import tune

    from orchestrator.sweep.searcher import ResumableOptunaSearch

    where = SweepDir.of(cfg)
    trainable = tune.with_resources(tune.with_parameters(_trainable, sweep=cfg.model_dump()), trial_resources(cfg))
    if resume:
        experiment, filesystem = where.tune_storage(cfg.name)
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=filesystem)
    storage_path, filesystem = where.tune_storage()  # on object storage: Tune's own state goes there too
    samples = num_samples(cfg, plan)
    # Only the driver touches the study (OptunaSearch runs there), so SQLite is safe with many workers; and
    # RDBStorage survives Tune's pickling of the searcher (JournalStorage holds a lock and does not).
    storage = RDBStorage(where.optuna_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # created here (OptunaSearch loads it) so the objectives carry their names in optuna-dashboard
    optuna.create_study(storage=storage, study_name=cfg.name, load_if_exists=True,
                        directions=["maximize" if o.mode == "max" else "minimize" for o in cfg.search.objectives]
                        ).set_metric_names([o.name for o in cfg.search.objectives])
    searcher = ResumableOptunaSearch(space=DefineByRun(plan), metric=[o.name for o in cfg.search.objectives],
                            mode=[o.mode for o in cfg.search.objectives],
                            sampler=make_sampler(sampler_name(cfg, plan), cfg.search.seed, samples),
                            study_name=cfg.name, storage=storage, seed=cfg.search.seed)
    return tune.Tuner(
        trainable,
        # reuse_actors: a finished trial's worker process runs the next trial, so each trial does not pay
        # again for starting Python and importing torch/transformers/peft/deepspeed (bench.orchestration_overhead)
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=samples, reuse_actors=True,
                                    max_concurrent_trials=cfg.search.max_concurrent_trials,
                                    scheduler=make_scheduler(cfg, plan)),
        run_config=tune.RunConfig(name=cfg.name, storage_path=storage_path, storage_filesystem=filesystem, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=cfg.failure.max_failures),
                                  callbacks=callbacks))


def run(cfg: SweepConfig, resume: bool = False, callbacks: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; returns every trial result found in the sweep dir afterwards.
    Tracking is checked before Ray starts: an unreachable MLflow store is a config error, not a surprise
    after the first trial."""
    from orchestrator.tracking.sync import TrackingSync

    from orchestrator.tracking import mlflow_runs

    plan = make_plan(cfg)
    address = cfg.ray.address
    where = SweepDir.of(cfg)
    where.check()  # an unreachable store or a missing bucket: one line, before anything is written
    where.claim(cfg, resume, write=False)  # every check before anything is written
    if resume:
        where.fetch(databases_only=True)  # the study and the tracking store, if this machine has no copy
    if address not in ("local", "auto"):
        probe(address)
    tracker = None
    if cfg.tracking.enabled:
        tracker = mlflow_runs.Tracker(cfg)  # an unreachable store is a config error here, before Ray starts
        callbacks = [*(callbacks or []), TrackingSync(cfg.model_dump())]
    connect(address, cfg.ray.num_cpus)
    check_placement(cfg, alive_nodes())  # a trial no node or the cluster can hold: refused before the claim
    where.claim(cfg, resume)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment state on disk every few seconds
    # Ctrl-C is the user's KeyboardInterrupt, not Tune's: Tune's own handler would end fit() as if the
    # sweep had run to its end, and the trials in flight would then be closed as abandoned. Interrupted,
    # the sweep's run ends KILLED and `--resume` continues it like a killed driver's (state saved above).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # results go to the trial dirs and MLflow: no CSV/JSON/TensorBoard loggers of Tune's own (nor its hint
    # to start TensorBoard, which would point at files nobody needs), and no banner of Tune's: the sweep
    # prints its own plan and progress
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = build_tuner(cfg, plan, resume, callbacks or [])
    # eval.mode pool: the sweep's one evaluation service, its start-up paid here once; it goes with the driver
    evaluator = scoring.start_service(cfg.output_dir, cfg.eval, cfg.model) if cfg.eval.mode == "pool" else None
    if tracker is not None:
        mlflow_runs.best_effort(cfg, "mark the sweep's run as running", lambda t: t.start_sweep(), tracker)
    began = time.time()
    try:
        tuner.fit()
    except BaseException as err:
        close_sweep_run(cfg, tracker, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED", where.collect())
        where.publish()
        raise
    finally:
        if evaluator is not None:
            service.stop(evaluator)
    atomic_write_json(where.timing(began), {"started": began, "ended": time.time(), "resumed": resume})
    fail_orphaned_trials(cfg)
    abandon_leftovers(where)
    results = where.collect()
    # anything a callback missed (e.g. before a resume)
    mlflow_runs.best_effort(cfg, "sync the sweep's trials", lambda t: t.sync_all(results), tracker)
    close_sweep_run(cfg, tracker, outcome(results), results)
    where.publish()  # on object storage: the timing, and backups of the study and the tracking store
    return results


def outcome(results: list[dict[str, Any]]) -> str:
    """A sweep that ran to its end finished if any trial reached a final point (the CLI's exit code too)."""
    return "FINISHED" if any(has_final_point(r) for r in results) else "FAILED"


def close_sweep_run(cfg: SweepConfig, tracker: Any, status: str, results: list[dict[str, Any]]) -> None:
    """The sweep's MLflow run ends like the sweep, with its story (`sweep_analysis.story`) and outputs."""
    if tracker is None:
        return
    from orchestrator.tracking import mlflow_runs

    where = SweepDir.of(cfg)
    counts, hypervolumes = sweep_analysis.story(cfg, results)
    mlflow_runs.best_effort(cfg, "close the sweep's run",
                         lambda t: t.finish_sweep(status, counts, hypervolumes, [where.pareto, where.report]), tracker)
