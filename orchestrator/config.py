"""Typed sweep config (pydantic), loaded from YAML with `--set a.b=c` overrides.

Every mistake a user can make here ends in one `ConfigError` line naming the field, the value and what is
allowed; the CLI prints it and exits 2. Method names, settings and suite names are checked against the
registries at load time, so a typo fails before any model is loaded.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class TrainConfig(_Strict):
    task: str = Field("arithmetic", description="target task whose train split is the SFT data")
    train_items: int = Field(512, gt=0)
    steps: int = Field(40, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=8)
    lr: float = Field(1e-3, gt=0, lt=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(10, gt=0)
    zero_stage: Literal[0, 1, 2, 3] = 0
    seed: int = 0
    threads: int | None = Field(None, gt=0, description="torch threads; default: all cores")

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

    @model_validator(mode="after")
    def _known_suites(self) -> "EvalConfig":
        for kind in suites.SUITE_KINDS:
            try:
                for task in suites.suite_task_names(kind, getattr(self, f"{kind}_suite")):
                    suites.load_task(task)
            except suites.TaskError as err:
                raise ValueError(str(err)) from None
        return self


class MethodEntry(_Strict):
    name: str
    settings: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1)

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


class SweepConfig(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    output_dir: str = "runs/{name}"
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    methods: list[MethodEntry] = Field(..., min_length=1)

    def sweep_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))

    def trials(self) -> list[tuple[str, dict[str, Any]]]:
        """The fixed (method, setting) list this config plans, in order."""
        return [(m.name, setting) for m in self.methods for setting in m.settings]


def config_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key; check the spelling against the documented config fields"
    if first["type"] == "missing":
        return f"{where}: required field is missing"
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" = {value!r}"
    return f"{where}{shown}: {message}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (['a', 'b'], c) with c parsed as YAML (numbers, bools, lists work as expected)."""
    if "=" not in text:
        raise ConfigError(f"--set: {text!r} is not KEY=VALUE (e.g. train.steps=20)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set: {text!r} has an empty key")
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


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: {str(path)!r} does not exist; allowed: a YAML file path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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


def load(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    return validate(apply_overrides(read_yaml(path), overrides or []))
