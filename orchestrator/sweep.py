"""Ray Tune runs a multi-objective Optuna search over methods, budgets and hyper-parameters.

The driver resolves every (method, budget) to a concrete setting up front (`plan`, from the model config
alone), then hands Ray Tune a define-by-run Optuna space: conditional knobs exist only for their method.
Each Tune trial runs `trial.run` in its own worker and reports every objective in one final result
(OptunaSearch reads only the last result in multi-objective mode). The Optuna study lives in a SQLite
database (Optuna's RDBStorage) in the sweep dir and Tune's experiment state under `ray/`, so `--resume`
continues a killed sweep without repeating finished trials: a finished trial's dir already holds its
completed result.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any

from methods import budget as budgets
from methods import registry
from evals import service, suites
from orchestrator import scoring, sweep_analysis, trial, workers
from orchestrator.config import ConfigError, SweepConfig, config_hash
from orchestrator.files import atomic_write_json
from orchestrator.sweep_dir import Status, SweepDir, TrialDir, has_final_point

# The driver's settings that trial workers must see (workers on `ray start` nodes do not inherit them).
# Where object storage is and how to reach it, but never credentials: each node brings its own (its
# environment, credential files or instance role), and nothing secret lands in Ray's job metadata.
FORWARDED_ENV = ("PEFT_ARENA_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "MLFLOW_TRACKING_URI", "DISABLE_MLFLOW_INTEGRATION",
                 "TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL")
# The project's four packages are shipped to remote workers (runtime_env py_modules), from a checkout or
# an installed wheel alike; caches and weights that may sit beside them stay home.
SHIPPED_EXCLUDES = ["**/__pycache__", "*.safetensors"]


@dataclass
class Plan:
    """What a sweep may try: per method, its candidate settings (labelled by budget where one was set)."""
    methods: list[str]
    settings: dict[str, list[dict[str, Any]]]
    budget_labels: dict[str, list[float | None]]
    knobs: dict[str, dict[str, list[Any]]]
    lrs: list[float] | None
    lr_range: tuple[float, float, bool] | None
    steps: list[int] | None
    seeds: list[int] | None
    regimes: list[str] | None = None
    zero_stages: dict[str, int] = field(default_factory=dict)  # per-method overrides of train.zero_stage
    grid_size: int = 0
    notes: list[str] = field(default_factory=list)


def make_plan(cfg: SweepConfig) -> Plan:
    """Resolve budgets to settings with `methods.budget.solve` (config only: no weights, no Ray)."""
    search = cfg.search
    settings: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, list[float | None]] = {}
    model_config = None
    for entry in cfg.methods:
        spec = registry.get(entry.name)
        if search.budgets and spec.budget_knob:
            if model_config is None:
                try:
                    model_config = budgets.load_model_config(cfg.model.name)
                except budgets.BudgetError as err:
                    raise ConfigError(f"model.name: {err}") from None
            chosen, chosen_labels = [], []
            for value in search.budgets:
                try:
                    solution = budgets.solve(model_config, spec.name, value, entry.settings[0],
                                             cfg.model.target_modules, search.budget_tolerance)
                except budgets.BudgetError as err:
                    raise ConfigError(f"search.budgets: {err}") from None
                if solution.setting not in chosen:
                    chosen.append(solution.setting)
                    chosen_labels.append(value)
            settings[spec.name], labels[spec.name] = chosen, chosen_labels
        else:
            settings[spec.name] = [spec.resolve_setting(s) for s in entry.settings]
            labels[spec.name] = [None] * len(entry.settings)
    knobs = {registry.get(m).name: k for m, k in search.knobs.items()}
    lrs = search.lr if isinstance(search.lr, list) else None
    lr_range = (search.lr.low, search.lr.high, search.lr.log) if search.lr is not None and lrs is None else None
    plan = Plan(list(settings), settings, labels, knobs, lrs, lr_range, search.steps, search.seeds, search.regimes,
                {registry.get(e.name).name: e.zero_stage for e in cfg.methods if e.zero_stage is not None})
    per_method = [len(settings[m]) * math.prod(len(c) for c in knobs.get(m, {}).values()) for m in settings]
    if lr_range is None:  # a continuous lr makes the space infinite: grid_size stays 0
        plan.grid_size = sum(per_method) * math.prod(len(v or [0]) for v in (lrs, search.steps, search.seeds,
                                                                              search.regimes))
    return plan


def sampler_name(cfg: SweepConfig, plan: Plan) -> str:
    """The sampler the sweep uses. `auto`: every configuration once (grid) when the trial budget covers
    the whole space, else TPE, the most sample-efficient one measured (bench/search_efficiency.py)."""
    chosen = cfg.search.sampler
    if chosen != "auto":
        return chosen
    covered = plan.grid_size and (cfg.search.num_samples or plan.grid_size) >= plan.grid_size
    return "grid" if covered else "tpe"


def num_samples(cfg: SweepConfig, plan: Plan) -> int:
    if sampler_name(cfg, plan) == "grid":  # more trials than configurations would only repeat some
        return min(cfg.search.num_samples or plan.grid_size, plan.grid_size)
    return cfg.search.num_samples or max(4, len(plan.methods) * 2)


# ------------------------------------------------------------------------------------------ the space


class DefineByRun:
    """Optuna's define-by-run space: a method's setting and knobs are only suggested when it is chosen.
    A module-level class, not a closure: OptunaSearch saves itself (this included) with plain pickle."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __call__(self, ot: Any) -> None:
        plan = self.plan
        method = ot.suggest_categorical("method", plan.methods)
        if len(plan.settings[method]) > 1:
            ot.suggest_categorical(f"{method}.setting", list(range(len(plan.settings[method]))))
        for key, choices in plan.knobs.get(method, {}).items():
            ot.suggest_categorical(f"{method}.{key}", choices)
        if plan.lrs:
            ot.suggest_categorical("lr", plan.lrs)
        elif plan.lr_range:
            ot.suggest_float("lr", plan.lr_range[0], plan.lr_range[1], log=plan.lr_range[2])
        if plan.steps:
            ot.suggest_categorical("steps", plan.steps)
        if plan.seeds:
            ot.suggest_categorical("seed", plan.seeds)
        if plan.regimes:
            ot.suggest_categorical("regime", plan.regimes)


def decode(params: dict[str, Any], plan: Plan, cfg: SweepConfig) -> tuple[str, dict[str, Any], SweepConfig, float | None]:
    """Suggested params -> (method, setting, the trial's config, its budget label)."""
    method = params["method"]
    index = params.get(f"{method}.setting", 0)
    setting = {**plan.settings[method][index]}
    setting.update({k: params[f"{method}.{k}"] for k in plan.knobs.get(method, {})})
    train = cfg.train.model_copy(update={k: params[k] for k in ("lr", "steps", "seed", "regime") if k in params}
                                 | ({"zero_stage": plan.zero_stages[method]} if method in plan.zero_stages else {}))
    return method, setting, cfg.model_copy(update={"train": train}), plan.budget_labels[method][index]


def make_sampler(name: str, seed: int, samples: int) -> Any:
    """An Optuna sampler by name (`sampler_name` resolves `auto` first)."""
    import warnings

    import optuna

    # BruteForceSampler is marked experimental since Optuna 3.1; it is what exhaustive search is
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return {
        # NSGA-II's first generation is random: small populations leave generations to evolve (on ZDT1,
        # 64 trials: a population of 8 reached random search's final hypervolume in 41 trials, of 32 in 51).
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, samples // 8))),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        # exhaustive over the define-by-run space, conditional knobs included: the method x budget table
        "grid": lambda: optuna.samplers.BruteForceSampler(seed=seed),
    }[name]()


# ------------------------------------------------------------------------------------------ reporting


def evaluation_line(cfg: SweepConfig) -> str:
    """Where the checkpoints are scored, and what the evaluation service takes from the cluster."""
    if cfg.eval.mode == "inline":
        return "checkpoints scored inline: in each trial's process, training waits"
    return (f"checkpoints scored by the sweep's evaluation service: {cfg.eval.pool_size} Ray Data actor(s) x "
            f"{cfg.eval.cpus_per_actor:g} CPU / {cfg.eval.gpus_per_actor:g} GPU, beside the trials")


def training_line(cfg: SweepConfig, plan: Plan) -> str:
    """The training data, the global batch it is drawn in and the optimiser, as the paper states its recipe."""
    t, workers = cfg.train, cfg.resources.workers_per_trial
    source = suites.load_task(t.task).source
    where = f" ({source['kind']} {source['path']})" if "path" in source else ""
    per_step = []
    regimes = plan.regimes or [t.regime]
    if "sft" in regimes:
        kept = "over-long examples dropped" if t.overlong == "drop" else "over-long prompts cut from the left"
        per_step.append(f"SFT: {t.batch_size * workers * t.grad_accum} examples per step ({t.batch_size} per "
                        f"micro-batch x {workers} worker(s) x {t.grad_accum} accumulation), max length "
                        f"{t.max_length}, {kept}")
    if "grpo" in regimes:
        per_step.append(f"GRPO: {t.grpo.prompts_per_step * workers * t.grad_accum} prompts per step x "
                        f"{t.grpo.group_size} samples at temperature {t.grpo.temperature:g}")
    return (f"train task {t.task}{where}, up to {t.train_items} items; {'; '.join(per_step)}; AdamW betas ({t.betas[0]:g}, {t.betas[1]:g}), {t.schedule} schedule")


def placement_line(cfg: SweepConfig, plan: Plan, concurrent: tuple[int, str]) -> str:
    """What one trial takes (world size, per-worker CPUs and GPUs) and how many trials run at once."""
    res = cfg.resources
    ranks = "one process" if res.workers_per_trial == 1 else \
        f"world size {res.workers_per_trial} (Ray Train workers, DeepSpeed ZeRO-{cfg.train.zero_stage})"
    zero = sorted(plan.zero_stages.items())
    overrides = "; ZeRO per method: " + ", ".join(f"{m} {z}" for m, z in zero) if zero else ""
    return (f"per trial: {ranks}, {res.cpus_per_worker:g} CPU / {res.gpus_per_worker:g} GPU per worker; "
            f"{concurrent[0]} trial(s) at once ({concurrent[1]}){overrides}")


def concurrent_trials(cfg: SweepConfig, cluster: dict[str, float] | None = None) -> tuple[int, str]:
    """(trials that can run at once, where that comes from): the cluster's totals when connected, capped
    by search.max_concurrent_trials; without a cluster, the config's cap alone."""
    cap = cfg.search.max_concurrent_trials
    if cluster is None:
        return cap, "search.max_concurrent_trials; a connected cluster may allow fewer"
    fits = min(int(cluster.get(kind, 0.0) // need) for kind, need in cfg.resources.totals().items() if need > 0)
    return min(cap, fits), f"cluster {cluster.get('CPU', 0):g} CPU / {cluster.get('GPU', 0):g} GPU, cap {cap}"


def check_placement(cfg: SweepConfig, nodes: list[dict[str, float]]) -> None:
    """A trial the cluster can never place is a config error now, not a sweep that waits forever (Tune and
    Train wait for resources that no node will free). `nodes`: each alive node's total resources."""
    res = cfg.resources
    for kind, need in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker)):
        largest = max((node.get(kind, 0.0) for node in nodes), default=0.0)
        if need > largest:
            raise ConfigError(f"resources.{kind.lower()}s_per_worker = {need:g}: no node has that many {kind}s "
                              f"(largest: {largest:g}); allowed: at most {largest:g}")
    for kind, need in res.totals().items():
        total = sum(node.get(kind, 0.0) for node in nodes)
        if need > total:
            raise ConfigError(f"resources.workers_per_trial = {res.workers_per_trial}: a trial needs {need:g} {kind}s, "
                              f"the cluster has {total:g}; allowed: workers_per_trial x {kind.lower()}s_per_worker "
                              f"<= {total:g}")


def cluster_totals(cfg: SweepConfig) -> dict[str, float]:
    """The resources of the cluster at `ray.address` (connecting to it), once a trial is known to fit there."""
    import ray

    if cfg.ray.address != "auto":
        probe(cfg.ray.address)
    connect(cfg.ray.address, None)
    check_placement(cfg, alive_nodes())
    return dict(ray.cluster_resources())


def describe(cfg: SweepConfig, plan: Plan, cluster: dict[str, float] | None = None) -> list[str]:
    """The planned space and resources, as lines (what --dry-run prints); `cluster`: a connected cluster's
    totals, which bound how many trials run at once."""
    sampler = sampler_name(cfg, plan)
    picked = f" (auto: {'the whole space' if sampler == 'grid' else 'the space exceeds the trials'})" \
        if cfg.search.sampler == "auto" else ""
    lines = [f"sweep {cfg.name}: sampler {sampler}{picked}, {num_samples(cfg, plan)} trials, "
             f"Ray address {cfg.ray.address}", placement_line(cfg, plan, concurrent_trials(cfg, cluster)),
             "objectives: " + ", ".join(f"{o.name} ({o.mode})" for o in cfg.search.objectives),
             f"model {cfg.model.name}", training_line(cfg, plan), suites.suite_protocol("target", cfg.eval.target_suite),
             suites.suite_protocol("retention", cfg.eval.retention_suite), evaluation_line(cfg)]
    for method in plan.methods:
        for setting, label in zip(plan.settings[method], plan.budget_labels[method]):
            budget = f"budget {label:.3g} -> " if label else ""
            lines.append(f"  {method:9s} {budget}{json.dumps(setting, sort_keys=True)}")
        for key, choices in plan.knobs.get(method, {}).items():
            lines.append(f"  {method:9s} knob {key}: {choices}")
    lr = plan.lrs or (f"log-uniform [{plan.lr_range[0]:g}, {plan.lr_range[1]:g}]" if plan.lr_range else cfg.train.lr)
    lines.append(f"  lr {lr}; steps {plan.steps or cfg.train.steps}; seeds {plan.seeds or [cfg.train.seed]}; "
                 f"regimes {plan.regimes or [cfg.train.regime]}")
    if sampler == "grid":
        lines.append(f"  grid size {plan.grid_size}")
    return lines


# ------------------------------------------------------------------------------------------ running


def _trainable(params: dict[str, Any], sweep: dict[str, Any]) -> None:
    """Runs inside a Ray worker: one trial (here, or on its Ray Train workers), reporting each checkpoint's
    objectives as it is scored (what early stopping reads; one-worker trials) and then every objective of
    the finished trial (what OptunaSearch records)."""
    import ray
    from ray import tune

    from orchestrator.early_stop import STEP_KEY, checkpoint_objectives

    cfg = SweepConfig.model_validate(sweep)
    plan = make_plan(cfg)
    method, setting, trial_cfg, budget_label = decode(params, plan, cfg)
    sweep_dir = SweepDir.of(cfg).for_trial()  # on object storage: a temp mirror of this trial's own
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
    sweep_dir.release()  # every file of the trial is in the store (write_result uploaded them)
    report = {name: value for name, value in sweep_analysis.objective_values(result).items() if value is not None}
    tune.report({**report, **labels})


def probe(address: str, timeout: float = 3.0) -> None:
    """Refuse an address where nothing listens at once: ray.init would wait minutes for it."""
    import socket

    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as err:
        raise ConfigError(f"ray.address = {address!r}: nothing answers there ({err.strerror or err}); "
                          "start the cluster first (clusters/), or use local") from None


def reuse_duplicate(siblings: list[dict[str, Any]], trial_dir: TrialDir) -> dict[str, Any] | None:
    """Samplers can propose a configuration the sweep already finished (NSGA-II's random first
    generation often does). Training is deterministic given the config, so the finished result is
    reused, recorded under this trial's id with `duplicate_of`, instead of spending the compute again."""
    for other in siblings:
        if has_final_point(other):
            now = time.time()
            copy = {**other, "trial_id": trial_dir.trial_id, "trial_dir": str(trial_dir.root),
                    "duplicate_of": other["trial_id"], "started_at": now, "ended_at": now}
            trial_dir.write_result(copy)
            return copy
    return None


def continue_interrupted(sweep_dir: SweepDir, siblings: list[dict[str, Any]], trial_dir: TrialDir) -> str | None:
    """A driver killed between starting a trial and Tune saving its experiment state leaves that trial's
    dir "running", and the resumed Tune, which never heard of it, runs its configuration again under a
    new id. The new trial takes over the old one's checkpoints (with their exact-resume state), so the
    work continues where it stopped instead of starting over; the old dir is marked abandoned, naming its
    successor. Only a trial whose process is known to be gone (same host, pid not alive) is taken over."""
    if trial_dir.read_result() is not None:
        return None  # a retry of this very trial: it resumes from its own checkpoints
    for other in siblings:
        if other["status"] != Status.RUNNING or not _process_gone(other):
            continue
        source = sweep_dir.trial(other["trial_id"])
        try:
            trial_dir.take_checkpoints(source)
        except FileNotFoundError:  # another trial of the same config took them a moment ago
            continue
        trial_dir.write_result({**other, "trial_id": trial_dir.trial_id, "trial_dir": str(trial_dir.root),
                                "continues": other["trial_id"],
                                "checkpoints": [c | {"path": str(trial_dir.checkpoint(c["step"]))}
                                                for c in other["checkpoints"]]})
        source.write_result(other | {"status": Status.ABANDONED, "continued_by": trial_dir.trial_id, "checkpoints": [],
                                     "failure_reason": "its sweep's driver was killed before Tune recorded the trial; "
                                     f"trial {trial_dir.trial_id} continued from its checkpoints"})
        return other["trial_id"]
    return None


def trial_config_hash(trial_cfg: SweepConfig, method: str, setting: dict[str, Any]) -> str:
    return config_hash(trial.trial_config(trial_cfg, method, setting))


def same_config_trials(sweep_dir: SweepDir, digest: str, trial_dir: TrialDir) -> list[dict[str, Any]]:
    """The sweep's other trials whose trial config hashes to `digest` (read once per trial start: what a
    duplicate reuses and an interrupted trial's successor takes over)."""
    return [other for other in sweep_dir.collect()
            if other.get("config_hash") == digest and other["trial_id"] != trial_dir.trial_id]


def _process_gone(result: dict[str, Any]) -> bool:
    if result.get("host") != platform.node() or not result.get("pid"):
        return False  # another machine's process: nothing here can tell whether it still runs
    if result["pid"] == os.getpid():
        return True  # Ray reuses worker processes: this one ran it, and runs another trial now
    try:
        os.kill(result["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def connect(address: str, num_cpus: int | None) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    env = {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    try:
        if address == "local":  # a private cluster (never one already running here), on loopback only
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="error", runtime_env=env, _node_ip_address="127.0.0.1")
        else:  # remote workers import the driver's own copy of the project's packages
            import analysis
            import evals
            import methods
            import orchestrator

            ray.init(address=address, log_to_driver=False, logging_level="error",
                     runtime_env={**env, "py_modules": [orchestrator, methods, evals, analysis],
                                  "excludes": SHIPPED_EXCLUDES})
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"ray.address = {address!r}: cannot connect ({str(err).splitlines()[0]})") from None


def alive_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources (CPU, GPU, ...) in the connected cluster."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def make_scheduler(cfg: SweepConfig, plan: Plan) -> Any:
    """None (every trial trains to its last step) or the multi-objective early-stopping scheduler."""
    stop = cfg.search.early_stop
    if stop.kind == "none":
        return None
    from orchestrator.early_stop import ParetoRungs

    longest = max(plan.steps or [cfg.train.steps])
    return ParetoRungs(cfg.output_dir, [(o.name, o.mode) for o in cfg.search.objectives],
                       stop.grace_steps or cfg.train.checkpoint_every, stop.reduction_factor, longest, stop.kind,
                       cfg.search.seed)


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    """What Tune reserves for a trial's own process: the one worker's resources, or nothing when Ray Train
    reserves the workers (a Tune trial holding CPUs the workers need could never be placed beside them)."""
    res = cfg.resources
    if res.workers_per_trial > 1:  # Tune refuses an empty request; one byte of memory holds nothing back
        return {"cpu": 0, "memory": 1}
    return {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}


def build_tuner(cfg: SweepConfig, plan: Plan, resume: bool, callbacks: list[Any]) -> Any:
    import optuna
    from optuna.storages import RDBStorage
    from ray import tune

    from orchestrator.searcher import ResumableOptunaSearch

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
    from orchestrator.callbacks import TrackingSync

    from orchestrator import tracking

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
        tracker = tracking.Tracker(cfg)  # an unreachable store is a config error here, before Ray starts
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
        tracking.best_effort(cfg, "mark the sweep's run as running", lambda t: t.start_sweep(), tracker)
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
    tracking.best_effort(cfg, "sync the sweep's trials", lambda t: t.sync_all(results), tracker)
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
    from orchestrator import tracking

    where = SweepDir.of(cfg)
    counts, hypervolumes = sweep_analysis.story(cfg, results)
    tracking.best_effort(cfg, "close the sweep's run",
                         lambda t: t.finish_sweep(status, counts, hypervolumes, [where.pareto, where.report]), tracker)


def abandon_leftovers(where: SweepDir) -> int:
    """Trial dirs still "running" once Tune is done belong to trials a killed driver had started but not yet
    recorded, whose checkpoints no successor could take over (`continue_interrupted`): Tune ran their
    configuration again under a new id. They are marked abandoned (with that reason), so no table or
    analysis shows them as in flight."""
    left = [r for r in where.collect() if r["status"] == Status.RUNNING]
    for result in left:
        where.trial(result["trial_id"]).write_result(
            result | {"status": Status.ABANDONED, "failure_reason": "its sweep's driver was killed before Tune recorded "
                      "the trial; the configuration was run again under another trial id"})
    return len(left)


def fail_orphaned_trials(cfg: SweepConfig) -> int:
    """Optuna trials still RUNNING once Tune is done were asked for by a driver that died before it
    recorded them and were not requeued (a kill during the resumed sweep): closed as FAIL rather than left
    to look in flight."""
    import optuna

    from orchestrator.searcher import fail_orphans

    return len(fail_orphans(optuna.load_study(study_name=cfg.name, storage=SweepDir.of(cfg).optuna_url)))
