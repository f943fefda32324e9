"""Typed sweep config (pydantic), loaded from YAML with `--set a.b=c` overrides.

Every mistake a user can make here ends in one `ConfigError` line naming the field, the value and what is
allowed; the CLI prints it and exits 2. Method names, settings and suite names are checked against the
registries at load time, so a typo fails before any model is loaded.

A config argument is a YAML path or the name of a config shipped with the package (`configs/` beside this
file: `quick`, `quick-rl`, `paper-qwen2.5-7b-sft`, ...; `shipped_configs()` lists them).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis import rewind as rewinding
from evals import suites
from methods import registry


class ConfigError(ValueError):
    """A user error in a config, a CLI option or an input path: one line, exit code 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    name: str = Field("smollm2-135m", description="alias (smollm2-135m), local dir, or hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    target_modules: str | list[str] = "all-linear"
    trust_pickle: bool = False


class GRPOConfig(_Strict):
    group_size: int = Field(4, ge=2, description="completions sampled per prompt (G)")
    prompts_per_step: int = Field(2, gt=0)
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int | None = Field(None, gt=0, description="default: the training task's own "
                                       "max_new_tokens, the length its answers are scored at")
    rollout_chunk: int | None = Field(None, gt=0, description="completions per generate call (a memory cap); "
                                      "default: all of a step's prompts x group_size at once. Samples do not "
                                      "depend on it")
    minibatches: int = Field(1, gt=0, description="policy updates per rollout: a rollout's prompts are split "
                             "into this many mini-batches, one optimizer step each, all scored against the "
                             "rollout's log-probs, so the ratio moves and the clip acts (the paper's PPO mini-batch "
                             "64 of 256 prompts: 4). 1: one update, the ratio is always 1")
    loss_agg: Literal["sequence_mean", "token_mean"] = Field(
        "sequence_mean", description="the surrogate's mean: per sequence, then over sequences (GRPO's "
        "original), or over every completion token of the mini-batch (the paper's veRL setting)")
    clip_eps: float = Field(0.2, gt=0, lt=1)
    kl_coef: float = Field(0.0, ge=0, description="0: no KL term (the paper's setting)")
    lr_scale: float = Field(1.0, gt=0, le=1, description="GRPO trials train at train.lr x lr_scale (also when lr "
                            "is searched): RL needs smaller steps than SFT; the paper uses 1e-5 vs SFT's 2e-4")


class TrainConfig(_Strict):
    regime: Literal["sft", "grpo"] = "sft"
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    task: str = Field("arithmetic", description="target task whose train split is the training data")
    train_items: int = Field(512, gt=0)
    steps: int = Field(40, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=8)
    overlong: Literal["truncate", "drop"] = Field(
        "truncate", description="an example longer than max_length loses prompt tokens from the left, or is "
        "dropped from the training data (the paper's recipe: no answer is ever cut)")
    lr: float = Field(1e-3, gt=0, lt=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    schedule: Literal["cosine", "constant"] = Field("cosine", description="after the warm-up: cosine decay to 0 "
                                                    "(the paper's SFT) or a constant rate (its RL)")
    # a list, not a tuple: a trial's config is read back from JSON and must compare equal to the one it ran
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2,
        description="AdamW's betas: [0.9, 0.95] for the paper's SFT, [0.9, 0.999] for its RL")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(10, gt=0)
    resume_state: Literal["last", "all", "none"] = Field(
        "last", description="optimizer/RNG/data state kept for an exact resume: for the newest checkpoint (removed "
        "when the trial completes), for every checkpoint (kept), or none (a resume restarts AdamW's moments)")
    zero_stage: Literal[0, 1, 2, 3] = 0
    seed: int = 0
    threads: int | None = Field(None, gt=0, description="torch threads; default: all cores")

    @model_validator(mode="after")
    def _sample_as_the_task_is_scored(self) -> "TrainConfig":
        """GRPO's reward is the task's scorer, so its samples are as long as the task's scored answers."""
        if self.grpo.max_new_tokens is None:
            self.grpo.max_new_tokens = suites.load_task(self.task).max_new_tokens
        return self

    @model_validator(mode="after")
    def _checkpoints_between_rollouts(self) -> "TrainConfig":
        """A resume restarts at a rollout: the mini-batches of one are never split by a checkpoint."""
        m = self.grpo.minibatches
        if self.regime == "grpo" and m > 1:
            if self.grpo.prompts_per_step % m:
                raise ValueError(f"grpo.minibatches: {m} does not divide grpo.prompts_per_step "
                                 f"({self.grpo.prompts_per_step}); allowed: a divisor of it")
            if (self.checkpoint_every * self.grad_accum) % m:
                raise ValueError(f"grpo.minibatches: {m} does not divide checkpoint_every x grad_accum "
                                 f"({self.checkpoint_every * self.grad_accum}); allowed: a divisor, so every "
                                 "checkpoint falls between rollouts")
        return self

    @property
    def effective_lr(self) -> float:
        """The peak learning rate this regime trains at."""
        return self.lr * (self.grpo.lr_scale if self.regime == "grpo" else 1.0)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            suites.load_task(value)
        except suites.TaskError as err:
            raise ValueError(str(err)) from None
        return value


class EvalConfig(_Strict):
    target_suite: str | list[str] = "arithmetic"   # a named suite, a task, or a list of tasks / YAML paths
    retention_suite: str | list[str] = "quick"
    split: Literal["validation", "test"] = "test"
    max_items: int | None = Field(None, gt=0, description="cap on items per task")
    batch_size: int = Field(16, gt=0)
    mode: Literal["inline", "pool"] = Field(
        "inline", description="inline: a trial scores its checkpoints in its own process while training waits "
        "(fastest on a few cores); pool: it hands them to the sweep's evaluation service, a Ray Data actor pool, "
        "and trains on")
    pool_size: int = Field(1, gt=0, description="actors of the evaluation service (eval.mode: pool)")
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0, description="fractions allowed: several actors share a GPU")

    def suite_refs(self) -> dict[str, str | list[str]]:
        """The target and retention suite references by kind (suites.SUITE_KINDS)."""
        return {kind: getattr(self, f"{kind}_suite") for kind in suites.SUITE_KINDS}

    @model_validator(mode="after")
    def _known_suites(self) -> "EvalConfig":
        for kind in suites.SUITE_KINDS:
            try:
                for task in suites.suite_task_names(kind, self.suite_refs()[kind]):
                    suites.load_task(task)
            except suites.TaskError as err:
                raise ValueError(str(err)) from None
        return self


class MethodEntry(_Strict):
    name: str
    settings: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1)
    zero_stage: Literal[0, 1, 2, 3] | None = Field(None, description="this method's ZeRO stage (default: "
                                                   "train.zero_stage), e.g. 3 for full finetuning only")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        """`methods: [lora, oft]` is shorthand for `[{name: lora}, {name: oft}]`."""
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known_method(self) -> "MethodEntry":
        try:
            spec = registry.get(self.name)
            for setting in self.settings:
                spec.resolve_setting(setting)
        except registry.UnknownMethodError as err:
            raise ValueError(str(err)) from None
        self.__dict__["name"] = spec.name  # canonical name, without re-validating
        return self


def lookup(record: dict[str, Any], dotted: str) -> Any:
    """`record["a"]["b"]` for "a.b"; None where any part is missing."""
    node: Any = record
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


@dataclass(frozen=True)
class ObjectiveSpec:
    """Everything about one objective a sweep can optimise, for every place that reads one: a trial's
    result at its end (the search, the front), a checkpoint part-way (early stopping), an operating point
    (plots and fronts name gain, forgetting, params)."""
    result_path: str  # where a trial's result holds its final value
    point_key: str  # its name in an operating point
    checkpoint_path: str | None = None  # where a checkpoint's record (with the trial's `params`) holds it; None: end only

    def at_checkpoint(self, point: dict[str, Any], params: dict[str, Any] | None) -> Any:
        return lookup({**point, "params": params}, self.checkpoint_path) if self.checkpoint_path else None


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "target_gain": ObjectiveSpec("final.gain", "gain", "gain"),
    "forgetting": ObjectiveSpec("final.forgetting", "forgetting", "forgetting"),
    "target": ObjectiveSpec("final.target", "target", "target.score"),
    "retention": ObjectiveSpec("final.retention", "retention", "retention.score"),
    "trainable_params": ObjectiveSpec("params.trainable", "params", "params.trainable"),
    "wall_time_s": ObjectiveSpec("timings.total_s", "wall_time_s"),
    "peak_rss_mb": ObjectiveSpec("peak_rss_mb", "peak_rss_mb"),
}


class Objective(_Strict):
    name: Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]
    mode: Literal["max", "min"]
    reference: float | None = Field(None, description="this objective's value in the hypervolume reference point "
                                    "(fix it to compare sweeps); default: 0 for target_gain, else 10% of the "
                                    "observed range beyond the worst observed value")


class LogRange(_Strict):
    low: float = Field(..., gt=0)
    high: float = Field(..., gt=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> "LogRange":
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        return self


# objectives a trial has at every checkpoint, so early stopping can compare trials part-way
CHECKPOINT_OBJECTIVES = tuple(name for name, spec in OBJECTIVES.items() if spec.checkpoint_path)


class EarlyStopConfig(_Strict):
    kind: Literal["none", "hv", "epsnet", "random"] = Field(
        "none", description="none, or the ranking at checkpoint rungs: hv (Pareto layers, then hypervolume "
        "contribution), epsnet (Pareto layers, then MOASHA's epsilon-net), random (a control)")
    grace_steps: int | None = Field(None, gt=0, description="the first rung (default: train.checkpoint_every)")
    reduction_factor: float = Field(3.0, gt=1, description="eta: rungs at grace * eta^k; the top 1/eta continue")


class SearchConfig(_Strict):
    # auto: every configuration once (grid) when num_samples covers the whole space, else TPE, the most
    # sample-efficient sampler measured here (bench/search_efficiency.py)
    sampler: Literal["auto", "nsga2", "tpe", "gp", "random", "grid"] = "auto"
    num_samples: int | None = Field(None, gt=0, description="trials; grid: defaults to the grid size")
    max_concurrent_trials: int = Field(1, gt=0)
    seed: int = 0
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(name="target_gain", mode="max"), Objective(name="forgetting", mode="min")],
        min_length=1)
    budgets: list[float] | None = Field(None, min_length=1, description="trainable-parameter budgets")
    budget_tolerance: float = Field(2.0, ge=1.0)
    lr: list[float] | LogRange | None = None
    steps: list[int] | None = Field(None, min_length=1)
    seeds: list[int] | None = Field(None, min_length=1)
    knobs: dict[str, dict[str, list[Any]]] = Field(default_factory=dict, description="per-method setting choices")
    regimes: list[Literal["sft", "grpo"]] | None = Field(None, min_length=1, description="training regimes to compare")
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)

    @field_validator("budgets", "lr")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, list) and any(v <= 0 for v in value):
            raise ValueError(f"every value must be > 0, got {value}")
        return value

    @field_validator("steps")
    @classmethod
    def _positive_steps(cls, value: list[int] | None) -> list[int] | None:
        if value and any(v <= 0 for v in value):
            raise ValueError(f"every value must be > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SearchConfig":
        if self.sampler == "grid" and isinstance(self.lr, LogRange):
            raise ValueError("search.lr: a range cannot be enumerated by sampler grid; allowed: a list of values")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"search.objectives: {names} names an objective twice")
        if self.early_stop.kind != "none" and not set(names) <= set(CHECKPOINT_OBJECTIVES):
            raise ValueError(f"search.early_stop: objectives {sorted(set(names) - set(CHECKPOINT_OBJECTIVES))} are "
                             f"known only when a trial ends; allowed with early stopping: "
                             f"{', '.join(CHECKPOINT_OBJECTIVES)}")
        for method, knobs in self.knobs.items():
            try:
                spec = registry.get(method)
                for key, choices in knobs.items():
                    spec.resolve_setting({key: choices[0]} if choices else {})
                    if not choices:
                        raise ValueError(f"search.knobs.{method}.{key}: an empty list of choices")
            except registry.UnknownMethodError as err:
                raise ValueError(f"search.knobs: {err}") from None
        return self


class ThroughputConfig(_Strict):
    """Per-worker rates the --dry-run cost plan divides by; unset: the defaults it names (measured on CPUs,
    assumed on GPUs)."""
    train_flops_per_s: float | None = Field(None, gt=0, description="training FLOP/s one worker achieves")
    generate_tokens_per_s: float | None = Field(None, gt=0, description="new tokens/s one worker generates, batched")


class ResourcesConfig(_Strict):
    """What one trial takes: `workers_per_trial` Ray Train workers (data-parallel DeepSpeed ranks), each with
    its CPUs and GPUs. One worker (the default) is a single process, without Ray Train."""
    workers_per_trial: int = Field(1, ge=1, description="data-parallel ranks of one trial")
    cpus_per_worker: float = Field(2.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    throughput: ThroughputConfig = Field(default_factory=ThroughputConfig)

    def totals(self) -> dict[str, float]:
        """CPUs and GPUs of one whole trial."""
        return {"CPU": self.workers_per_trial * self.cpus_per_worker, "GPU": self.workers_per_trial * self.gpus_per_worker}


class RayConfig(_Strict):
    address: str = Field("local", description="local | auto | host:port | ray://host:port")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local cluster (default: all)")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value in ("local", "auto") or re.fullmatch(r"(ray://)?[A-Za-z0-9._-]+:\d{2,5}", value):
            return value
        raise ValueError("allowed: local, auto, host:port or ray://host:port")


class FailurePolicy(_Strict):
    max_failures: int = Field(1, ge=0, description="retries of a crashed trial, from its last checkpoint")


class RewindConfig(_Strict):
    """Path-wise rewinding: the paths walked, the points on them, and the rule that picks one. The one
    place its defaults live: `rewind:` in a sweep config and `peft-arena rewind`'s options both read it."""
    enabled: bool = False
    paths: list[rewinding.PathName] = Field(default_factory=lambda: ["trajectory", "interp"], min_length=1)
    alphas: str = Field("0:1:0.25", description="START:STOP:STEP or a comma list, in [0, 1]")
    select: rewinding.Rule = "dominate_final"
    tau: float = Field(0.0, ge=0, description="max_target: allowed forgetting")
    delta: float = Field(0.02, ge=0, description="max_retention: allowed target loss")

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: str) -> str:
        rewinding.parse_alphas(value)  # raises with the allowed form
        return value

    @property
    def alpha_values(self) -> list[float]:
        return rewinding.parse_alphas(self.alphas)


class TrackingConfig(_Strict):
    enabled: bool = True
    uri: str | None = Field(None, description="default: sqlite:///<sweep dir>/mlflow.db; or http(s)://server")
    experiment: str | None = Field(None, description="default: the sweep name")
    log_checkpoints: Literal["all", "final", "none"] = "all"
    live: bool = Field(True, description="trials stream their metrics into their run while they train (else the "
                       "driver logs each trial's result when it ends)")
    live_every_s: float = Field(5.0, ge=0, description="seconds between a trial's batches of step metrics")
    system_metrics_every_s: float = Field(10.0, gt=0, description="seconds between samples of CPU, memory, GPU")

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        allowed = ("sqlite:///", "http://", "https://", "postgresql://", "mysql://", "databricks")
        if value is None or value.startswith(allowed):
            return value
        raise ValueError(f"allowed: {', '.join(allowed)} (the ./mlruns file store is deprecated)")


# output_dir may name object storage (orchestrator.storage.bucket): these schemes, as pyarrow's filesystems spell them
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")


def uri_scheme(location: str) -> str:
    """`s3` of s3://bucket/x; "" for a local path (Windows drive letters are not schemes)."""
    found = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+)://", location)
    return found.group(1).lower() if found else ""


class SweepConfig(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    output_dir: str = "runs/{name}"
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    methods: list[MethodEntry] = Field(..., min_length=1)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    failure: FailurePolicy = Field(default_factory=FailurePolicy)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    rewind: RewindConfig = Field(default_factory=RewindConfig)

    @field_validator("output_dir")
    @classmethod
    def _path_or_store(cls, value: str) -> str:
        scheme = uri_scheme(value)
        if scheme and scheme not in OBJECT_STORE_SCHEMES + ("file",):
            raise ValueError(f"scheme {scheme}:// is not supported; allowed: a local path or "
                             f"{', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)}")
        if scheme in OBJECT_STORE_SCHEMES and not re.match(r"^[a-z0-9+.-]+://[^/]+", value):
            raise ValueError(f"{value!r} names no bucket; allowed: {scheme}://BUCKET/PREFIX")
        return value

    @model_validator(mode="after")
    def _absolute_output_dir(self) -> "SweepConfig":
        """Resolved here, in the driver: trials run in workers whose working dir is Ray's, not the user's.
        A URI stays a URI (only `{name}` filled in); file:// is a local path."""
        named = self.output_dir.format(name=self.name)
        if uri_scheme(named) in OBJECT_STORE_SCHEMES:
            self.__dict__["output_dir"] = named.rstrip("/")
        else:
            path = Path(named.removeprefix("file://")).expanduser().resolve()
            blocker = next((p for p in (path, *path.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():  # refused now, not by a trial's first write
                raise ValueError(f"output_dir = {named!r}: {blocker} is a file; allowed: a directory to create or reuse")
            self.__dict__["output_dir"] = str(path)
        return self

    @model_validator(mode="after")
    def _pool_where_it_can_serve(self) -> "SweepConfig":
        """The evaluation service scores a checkpoint after its trial has trained on, reading it from the
        sweep dir on whatever node its actor runs."""
        if self.eval.mode != "pool":
            return self
        if self.search.early_stop.kind != "none":
            raise ValueError(f"eval.mode: pool does not go with search.early_stop.kind {self.search.early_stop.kind!r} "
                             "(a stop is decided on each checkpoint's scores before training goes on); allowed: "
                             "eval.mode inline, or early_stop kind none")
        if uri_scheme(self.output_dir) in OBJECT_STORE_SCHEMES:
            raise ValueError("eval.mode: pool needs an output_dir every node reads (a shared path): its actors "
                             "load checkpoints from it; allowed with object storage: eval.mode inline")
        return self

    @model_validator(mode="after")
    def _workers_where_they_can_train(self) -> "SweepConfig":
        """A multi-worker trial reports to Tune once, at its end, and its ranks write to one shared path."""
        if self.resources.workers_per_trial == 1:
            return self
        if self.search.early_stop.kind != "none":
            raise ValueError(f"resources.workers_per_trial {self.resources.workers_per_trial} does not go with "
                             f"search.early_stop.kind {self.search.early_stop.kind!r} (a multi-worker trial reports "
                             "only its end to Tune); allowed: workers_per_trial 1, or early_stop kind none")
        if uri_scheme(self.output_dir) in OBJECT_STORE_SCHEMES:
            raise ValueError(f"resources.workers_per_trial {self.resources.workers_per_trial} needs an output_dir "
                             "every node reads (a shared path); allowed with object storage: workers_per_trial 1")
        return self

    @model_validator(mode="after")
    def _knobs_name_searched_methods(self) -> "SweepConfig":
        searched = {m.name for m in self.methods}
        for method in self.search.knobs:
            if registry.get(method).name not in searched:
                raise ValueError(f"search.knobs.{method}: not in methods ({', '.join(sorted(searched))})")
        return self


def digest(data: Any) -> str:
    """sha256 of data's canonical JSON: the same content gives the same digest on every machine."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def config_hash(data: dict[str, Any]) -> str:
    """A config's short digest: names a trial's config and tags its checkpoints."""
    return digest(data)[:12]


def _field_path(loc: tuple) -> str:
    """`search.lr.LogRange.low` -> `search.lr.low`: union branches show up as type names in pydantic locs."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p))]
    return ".".join(parts) or "config"


def _format_validation_error(err: ValidationError) -> str:
    errors = err.errors()
    # Of a union's branch errors, our own validators' messages say most; then the first error.
    first = next((e for e in errors if e["type"] == "value_error"), errors[0])
    where = _field_path(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key; check the spelling against the documented config fields"
    if first["type"] == "missing":
        return f"{where}: required field is missing"
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" = {value!r}"
    return f"{where}{shown}: {message}"


def parse_override(text: str, option: str = "--set", example: str = "train.steps=20") -> tuple[list[str], Any]:
    """`a.b=c` -> (['a', 'b'], c) with c parsed as YAML (numbers, bools, lists work as expected)."""
    if "=" not in text:
        raise ConfigError(f"{option}: {text!r} is not KEY=VALUE (e.g. {example})")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"{option}: {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"--set {text}: {part!r} is not a section")
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return data


SHIPPED_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """The example configs that ship with the package, by name."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}


def config_path(ref: str | Path) -> Path:
    """A config argument: an existing file, else the bare name of a shipped config (`quick`, `quick.yaml`)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs().get(str(ref).removesuffix(".yaml"))
    if shipped is not None:
        return shipped
    raise ConfigError(f"config: {str(ref)!r} does not exist; allowed: a YAML file path or a shipped config "
                      f"({', '.join(shipped_configs())})")


def read_yaml(ref: str | Path) -> dict[str, Any]:
    path = config_path(ref)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"config: {path} is not UTF-8 text (byte {err.start}); allowed: a YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config: {path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def validate(data: dict[str, Any]) -> SweepConfig:
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def rewind_options(options: dict[str, Any]) -> RewindConfig:
    """`peft-arena rewind`'s options (None: not given) over RewindConfig's defaults; a bad one is one line
    naming its option."""
    try:
        return RewindConfig.model_validate({k: v for k, v in options.items() if v is not None} | {"enabled": True})
    except ValidationError as err:
        raise ConfigError(f"--{_format_validation_error(err)}") from None


# the fields that name tasks: a task or suite name, or a path to a task YAML (lists: each entry)
TASK_FIELDS = (("train", "task"), ("eval", "target_suite"), ("eval", "retention_suite"))


def anchor_task_paths(data: dict[str, Any], anchors: dict[tuple[str, str], tuple[Path, str]]) -> dict[str, Any]:
    """Task YAML paths made absolute, each against the file or folder that names it (`anchors`: per field,
    that folder and how to say it), once, at load: a Ray worker runs in another working directory, and
    the config travels to it as data. A path that does not exist is refused here, naming what it was
    relative to."""
    for section, key in TASK_FIELDS:
        node = data.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        base, said = anchors[(section, key)]
        refs = node[key] if isinstance(node[key], list) else [node[key]]
        anchored = []
        for ref in refs:
            if suites.is_task_path(ref):
                path = (base / Path(ref).expanduser()).resolve()
                if not path.is_file():
                    raise ConfigError(f"{section}.{key}: {ref!r} does not exist (relative to {said}); allowed: a "
                                      "task or suite name, or the path of a task YAML")
                ref = str(path)
            anchored.append(ref)
        node[key] = anchored if isinstance(node[key], list) else anchored[0]
    return data


def load(ref: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """A config from a YAML path or a shipped config's name, with `--set` overrides, validated. Task paths
    in the file are relative to the file; those given with `--set`, to the current directory."""
    path = config_path(ref)
    overrides = overrides or []
    overridden = {tuple(parse_override(text)[0]) for text in overrides}
    anchors = {field: (Path.cwd(), "the current directory") if field in overridden else
               (path.resolve().parent, str(path)) for field in TASK_FIELDS}
    return validate(anchor_task_paths(apply_overrides(read_yaml(path), overrides), anchors))


TASK_SKELETON = """\
# Your own task. Its items are the lines of {name}.jsonl beside this file, one JSON object each: replace
# the examples with your data. Items are split 60/20/20 into train / validation / test by a hash of each
# item's first field (`source.key` names another): SFT trains on train, sweeps score test, rewinding
# selects on validation. Paths here are relative to this file.
name: {name}
source: {{kind: jsonl, path: {name}.jsonl}}
prompt: "Question: {{{{ question }}}}\\nAnswer:"   # Jinja over an item's fields
answer: " {{{{ answer }}}}"                      # what SFT trains on and a perfect reply writes
# generate_exact_match: a greedy reply, cut at a stop string, is a hit when its first line equals the answer
# (case, spaces and punctuation ignored; a numeric answer is compared with the reply's final number).
# answer_nll scores the answer's per-token probability instead (smoother on few items).
scorer: generate_exact_match
metric: exact_match
stop: ["\\n"]
max_new_tokens: 16
n_items: 200
"""
TASK_EXAMPLES = [{"question": f"What is the capital of {country}?", "answer": city} for country, city in (
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Peru", "Lima"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Chile", "Santiago"), ("Greece", "Athens"), ("Norway", "Oslo"))]


def init_task(name: str, folder: Path, force: bool = False) -> tuple[Path, Path]:
    """A task YAML skeleton and an example JSONL of its items in `folder`, for the user to fill."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ConfigError(f"init --task: {name!r}; allowed: a name of letters, digits, '_' and '-'")
    task, data = folder / f"{name}.yaml", folder / f"{name}.jsonl"
    for path in (task, data):
        if path.exists() and not force:
            raise ConfigError(f"init --task: {path} already exists; allowed: another name, or --force to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(item) + "\n" for item in TASK_EXAMPLES))
    task.write_text(TASK_SKELETON.format(name=name))
    return task, data


def init_config(name: str, source: str = "quick", force: bool = False, task: str | None = None) -> Path:
    """Write a shipped config to NAME.yaml (or to the path NAME) for the user to edit: comments kept,
    `name:` set to the new name. With `task`, also that task's skeleton beside it (`init_task`), which the
    config trains on and targets. An existing file is kept unless `force`."""
    target = Path(name if name.endswith((".yaml", ".yml")) else f"{name}.yaml").expanduser()
    sweep_name = target.stem
    if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep_name):
        raise ConfigError(f"init: {name!r}; allowed: a name of letters, digits, '.', '_' and '-'")
    if source not in shipped_configs():
        raise ConfigError(f"init --from: {source!r} is not a shipped config; allowed: {', '.join(shipped_configs())}")
    if target.exists() and not force:
        raise ConfigError(f"init: {target} already exists; allowed: another name, or --force to replace it")
    text = re.sub(r"^name:.*$", f"name: {sweep_name}", shipped_configs()[source].read_text(), count=1, flags=re.M)
    if task is not None:
        init_task(task, target.parent, force)
        text = re.sub(r"^(  task:) .*$", rf"\1 {task}.yaml", text, count=1, flags=re.M)
        text = re.sub(r"^(  target_suite:) .*$", rf"\1 [{task}.yaml]", text, count=1, flags=re.M)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    load(target)  # what we write always loads
    return target
