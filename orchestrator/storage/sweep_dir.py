"""The one owner of a sweep dir's layout: every path in it is named here, and every reader goes through here.

```
<output_dir>/
  sweep_config.json          the config the sweep was started with (resume and analysis read it)
  summary.json               the end-of-sweep table and front
  report.html                the self-contained HTML report
  optuna.db                  the Optuna study (SQLite, owned by the driver)
  mlflow.db, mlartifacts/    the default MLflow store and its artifacts
  mlflow-auth.ini, .db       MLflow's basic-auth app: its config and user store (a UI bound beyond loopback)
  ray/<name>/                Ray Tune's experiment state (what --resume restores)
  timing/fit-<t>.json        wall-clock span of each (re)start of the search
  analysis/                  pareto.json, figures/, geometry.json|html, rewind.json|html
  trials/<trial id>/
    result.json              the trial's result (written atomically, partial while it runs)
    checkpoints/step_NNNNNN/ one checkpoint along the trajectory (its files: orchestrator.trials.checkpoints)
    replies/<point>.jsonl.gz every generated reply of a scored point (base, step_NNNNNN): kind, task, item id, reply
    rewind.json              the trial's rewinding record
    rewound/<point>/         the chosen rewound point, as a checkpoint
```
Other modules ask a `SweepDir` or `TrialDir` for a path; none joins these names by hand (a test checks
that), so the layout can change in this file alone.

An output_dir may be a URI (s3://, gs://, ...): the sweep dir then lives on object storage and every
process works on a local mirror of it (`orchestrator.storage.bucket`). `root` is always a local folder; a
remote sweep dir pulls what it reads (`collect`, `read_result`, `open`) and pushes what it writes
(`write_result`, `claim`, `publish`).
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

from orchestrator.config import ConfigError, SweepConfig, config_hash, uri_scheme
from orchestrator.files import atomic_write_bytes, atomic_write_json, safe_join
from orchestrator.storage.bucket import Store, is_remote, open_store

CONFIG_SNAPSHOT = "sweep_config.json"
RESULT_FILE = "result.json"
CHECKPOINT_PREFIX = "step_"
# the version of result.json's layout this code writes and reads; a reader refuses a newer one
SCHEMA_VERSION = 1


class Status(StrEnum):
    """A trial's status in its result.json (a string there: members compare equal to their values)."""
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED_EARLY = "stopped_early"  # by the scheduler at a rung: its last checkpoint is a valid point
    FAILED = "failed"
    ABANDONED = "abandoned"  # its driver was killed before Tune recorded it; a successor continued it


# trial statuses whose last checkpoint is an operating point of the sweep (its front, rewinding, export)
WITH_FINAL_POINT = (Status.COMPLETED, Status.STOPPED_EARLY)


def has_final_point(result: dict[str, Any]) -> bool:
    return result.get("status") in WITH_FINAL_POINT and "final" in result


def trial_name(method: str, setting: dict[str, Any]) -> str:
    """A readable, filesystem-safe trial id for a single run: lora-r8, oft-block_size32, ia3-default."""
    parts = [f"{k}{v}" for k, v in sorted(setting.items())] or ["default"]
    return _safe_name("-".join([method, *parts]))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or torn (a writer killed mid-write never leaves a
    torn file, see orchestrator.files, but a file copied in by hand can be)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class TrialDir:
    """One trial's folder: its result, its checkpoints along the trajectory, its rewound points."""

    def __init__(self, root: Path, store: Store | None = None) -> None:
        self.root = Path(root)
        self.store = store

    @property
    def trial_id(self) -> str:
        return self.root.name

    @property
    def result_path(self) -> Path:
        return self.root / RESULT_FILE

    @property
    def train_runs(self) -> Path:
        """Ray Train's own state of a multi-worker trial (its worker groups' runs), kept with the trial."""
        return self.root / "ray_train"

    def read_result(self, fetch: bool = True) -> dict[str, Any] | None:
        """The result, with its paths pointing into this sweep dir wherever it was written (a trial on
        another node, a sweep dir moved or mirrored): readers load checkpoints from here. A checkpoint stays
        in the trial folder that holds it (a duplicate's are its original's)."""
        if fetch and self.store is not None:
            self.store.pull_file(self.result_path)
        result = _read_json(self.result_path)
        if result is None:
            return None
        if result.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise ConfigError(f"{self.result_path}: schema = {result['schema']}, written by a newer peft-arena; "
                              f"allowed: schema <= {SCHEMA_VERSION} (upgrade peft-arena to read this sweep dir)")
        return {**result, "trial_dir": str(self.root),
                "checkpoints": [{**c, "path": str(self.holder(c["path"]).checkpoint(c["step"]))} if "path" in c else c
                                for c in result.get("checkpoints", [])]}

    def holder(self, checkpoint_path: str) -> "TrialDir":
        """The trial folder of this sweep dir a recorded checkpoint path lies in (.../<trial>/checkpoints/step_N)."""
        return TrialDir(safe_join(self.root.parent, Path(checkpoint_path).parts[-3]), self.store)

    def write_result(self, result: dict[str, Any]) -> None:
        """Written atomically; on object storage, uploaded with every checkpoint written since the last
        result (the weights first, the result last: a reader never sees a result naming a missing file)."""
        atomic_write_json(self.result_path, result)
        self.publish()

    def publish(self) -> None:
        if self.store is not None:
            self.store.push(self.root)

    def fetch(self) -> None:
        """Everything of this trial the store holds (a retried trial's checkpoints, a rewind's inputs)."""
        if self.store is not None:
            self.store.pull(self.store.relative(self.root))

    @property
    def checkpoints_root(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_root / f"{CHECKPOINT_PREFIX}{step:06d}"

    def checkpoint_dirs(self) -> list[Path]:
        """Checkpoint dirs in step order (whether their files verify is the checkpoint module's call)."""
        return sorted(self.checkpoints_root.glob(f"{CHECKPOINT_PREFIX}*"))

    def take_checkpoints(self, other: "TrialDir") -> None:
        """Move another trial's checkpoints here, in one rename (raises FileNotFoundError if another trial
        took them first). Checkpoint folders hold no paths of their own, so they verify where they land."""
        other.fetch()
        self.root.mkdir(parents=True, exist_ok=True)
        other.checkpoints_root.rename(self.checkpoints_root)

    @property
    def replies_root(self) -> Path:
        return self.root / "replies"

    def replies(self, label: str) -> Path:
        """The replies of one scored point ("base", or a checkpoint's folder name): gzipped JSON lines."""
        return safe_join(self.replies_root, f"{_safe_name(label)}.jsonl.gz")

    def write_replies(self, label: str, rows: list[dict[str, Any]]) -> None:
        """Atomically, before the result that scores them (which pushes them to object storage with it)."""
        if rows:
            atomic_write_bytes(self.replies(label), gzip.compress(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode(), mtime=0))

    def read_replies(self, label: str) -> list[dict[str, Any]]:
        path = self.replies(label)
        return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()] if path.is_file() else []

    @property
    def rewind_record(self) -> Path:
        return self.root / "rewind.json"

    def rewound(self, label: str) -> Path:
        return safe_join(self.root, "rewound", _safe_name(label))

    def relative(self, path: str | Path) -> str:
        """A path inside this trial dir, relative to it (how MLflow artifacts mirror the trial's folders)."""
        return Path(path).relative_to(self.root).as_posix()


class SweepDir:
    """A sweep's folder. `SweepDir.of(cfg)` for the config's own; `SweepDir.open(path)` for an existing one."""

    def __init__(self, root: str | Path, store: Store | None = None) -> None:
        self.root = Path(root)
        self.store = store

    @classmethod
    def of(cls, cfg: SweepConfig) -> "SweepDir":
        return cls.at(cfg.output_dir)

    @classmethod
    def at(cls, location: str | Path) -> "SweepDir":
        """A local path, or a URI seen through this machine's mirror of it (under the cache dir)."""
        if is_remote(location):
            store = open_store(str(location))
            return cls(store.mirror, store)
        return cls(location)

    @classmethod
    def open(cls, path: str | Path) -> "SweepDir":
        """An existing sweep dir (made by `peft-arena sweep`), or a one-line user error. A remote one is
        brought up to date in the mirror first (only what changed since the last command comes down)."""
        found = cls.at(path if is_remote(path) else Path(path).expanduser().resolve())
        found.check()
        found.fetch()
        if not found.config_snapshot.is_file():
            raise ConfigError(f"sweep dir: {path} holds no {CONFIG_SNAPSHOT}; allowed: a dir made by `peft-arena sweep`")
        return found

    def __enter__(self) -> "SweepDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.publish()  # what a command wrote goes up even when it failed halfway

    def __str__(self) -> str:
        return self.store.uri if self.store is not None else str(self.root)

    def display(self, path: Path) -> str:
        """A path of the sweep dir as the user should look for it: in the bucket for a remote one."""
        return f"{self.store.uri}/{self.store.relative(path)}" if self.store is not None else str(path)

    # ----------------------------------------------------------------------------------- the store

    def check(self) -> None:
        """A remote sweep dir's store answers and its bucket exists (a one-line config error if not)."""
        if self.store is not None:
            self.store.check()

    def fetch(self, databases_only: bool = False) -> None:
        """What the store holds that changed, except Tune's state (Tune reads it from the store) and the
        driver's databases where a copy is already here (the store holds backups of them). A resumed
        sweep needs only the databases (`databases_only`): results come with `collect`."""
        if self.store is None:
            return
        ray = self.store.relative(self.ray_storage) + "/"

        def wanted(name: str) -> bool:
            if name.endswith(".db"):
                return not (self.root / name).is_file()
            return not databases_only and not name.startswith(ray)

        self.store.pull(only=wanted)

    def publish(self, path: Path | None = None) -> None:
        """Upload what changed locally under `path` (all of the sweep dir by default)."""
        if self.store is not None:
            self.store.push(path or self.root)

    def for_trial(self) -> "SweepDir":
        """The sweep dir as a trial worker sees it: a remote one through a temp mirror of the worker's own,
        so no two trials (or a trial and the driver) share a path; a local one as it is."""
        if self.store is None:
            return self
        mirror = Path(tempfile.mkdtemp(prefix="peft-arena-trial-"))
        return SweepDir(mirror, self.store.elsewhere(mirror))

    def release(self) -> None:
        """Drop a trial's temp mirror (`for_trial`) once everything in it is in the store."""
        if self.store is not None and self.root != open_store(self.store.uri).mirror:
            shutil.rmtree(self.root, ignore_errors=True)

    def clear(self) -> None:
        """Remove the sweep dir (and, on object storage, everything under its prefix)."""
        if self.store is not None:
            self.store.check()
            self.store.delete_all()
        shutil.rmtree(self.root, ignore_errors=True)

    def copy_within_store(self, path: Path, destination: str) -> bool:
        """Copy a folder of a remote sweep dir to `destination`, a URI on the same kind of store, without
        downloading it (S3 and GCS copy objects server-side); False when there is no such copy to make."""
        if self.store is None or uri_scheme(destination) != uri_scheme(self.store.uri):
            return False
        return self.store.copy_tree(path, destination) > 0

    def tune_storage(self, experiment: str | None = None) -> tuple[str, Any]:
        """Where Ray Tune keeps its experiment state (or one experiment's, to restore it): a path, and the
        pyarrow filesystem it is on (None: local disk). Tune writes it straight to object storage."""
        path = self.ray_experiment(experiment) if experiment else self.ray_storage
        if self.store is None:
            return str(path), None
        return self.store.remote(path), self.store.fs

    # ------------------------------------------------------------------------------------ sweep files

    @property
    def config_snapshot(self) -> Path:
        return self.root / CONFIG_SNAPSHOT

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def _sqlite(self, name: str) -> str:
        return f"sqlite:///{self.root / name}"

    @property
    def optuna_url(self) -> str:
        return self._sqlite("optuna.db")

    @property
    def ray_storage(self) -> Path:
        return self.root / "ray"

    def ray_experiment(self, name: str) -> Path:
        return self.ray_storage / name

    @property
    def mlflow_uri(self) -> str:
        return self._sqlite("mlflow.db")

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def mlflow_artifact_location(self) -> str:
        """Where MLflow puts artifacts: beside the sweep dir, on the same bucket for a remote one (MLflow's
        clients then upload there directly, with the same credentials)."""
        return self.display(self.mlflow_artifacts) if self.store is not None else self.mlflow_artifacts.as_uri()

    @property
    def mlflow_auth_config(self) -> Path:
        return self.root / "mlflow-auth.ini"

    @property
    def mlflow_auth_uri(self) -> str:
        return self._sqlite("mlflow-auth.db")

    def timing(self, began: float) -> Path:
        return self.root / "timing" / f"fit-{int(began)}.json"

    def timings(self) -> list[dict[str, Any]]:
        return [t for p in sorted((self.root / "timing").glob("fit-*.json")) if (t := _read_json(p)) is not None]

    @property
    def analysis_root(self) -> Path:
        return self.root / "analysis"

    @property
    def pareto(self) -> Path:
        return self.analysis_root / "pareto.json"

    @property
    def geometry(self) -> Path:
        return self.analysis_root / "geometry.json"

    @property
    def geometry_section(self) -> Path:
        return self.analysis_root / "geometry.html"

    @property
    def rewinding(self) -> Path:
        return self.analysis_root / "rewind.json"

    @property
    def rewinding_section(self) -> Path:
        return self.analysis_root / "rewind.html"

    def figure(self, name: str) -> Path:
        return safe_join(self.analysis_root, "figures", f"{name}.json")

    # ------------------------------------------------------------------------------------------ trials

    def trial(self, trial_id: str) -> TrialDir:
        return TrialDir(safe_join(self.root, "trials", trial_id), self.store)

    def trial_dirs(self) -> Iterator[TrialDir]:
        for path in sorted((self.root / "trials").glob("*")):
            if path.is_dir():
                yield TrialDir(path, self.store)

    def collect(self) -> list[dict[str, Any]]:
        """Every readable trial result, in the order the trials started (on object storage, every trial's
        latest result is fetched first: one listing, then the results)."""
        if self.store is not None:
            self.store.pull("trials", only=lambda name: name.endswith(f"/{RESULT_FILE}"))
        results = [r for t in self.trial_dirs() if (r := t.read_result(fetch=False)) is not None]
        return sorted(results, key=lambda r: (r.get("started_at") or 0.0, r["trial_id"]))

    # --------------------------------------------------------------------------------- the snapshot

    def load_config(self) -> SweepConfig:
        """The config this sweep was started with (sync, ui, analyze, rewind and report read it)."""
        snapshot = _read_json(self.config_snapshot)
        if snapshot is None:
            raise ConfigError(f"sweep dir: {self.root} holds no readable {CONFIG_SNAPSHOT}; "
                              "allowed: a dir made by `peft-arena sweep`")
        return SweepConfig.model_validate(snapshot["config"])

    def claim(self, cfg: SweepConfig, resume: bool | None, write: bool = True) -> None:
        """A sweep dir belongs to one config: resuming it with another is refused, and so is silently
        starting over in a dir that already holds a sweep. `resume=None` (single runs, which add trials
        to their dir run by run): continue a dir of this config, or start one. `write=False` only checks."""
        digest = config_hash(cfg.model_dump())
        if self.store is not None:
            self.store.pull_file(self.config_snapshot)
        recorded = _read_json(self.config_snapshot) if self.config_snapshot.is_file() else None
        if recorded is not None:
            if resume is False:
                raise ConfigError(f"output_dir: {self.root} already holds sweep {recorded['name']!r}; "
                                  "pass --resume to continue it, or choose another name/output_dir")
            if recorded["hash"] != digest:
                raise ConfigError(f"output_dir: {self.root} belongs to another config (hash {recorded['hash']}, "
                                  f"this one {digest}); allowed: the config it was started with, or another output_dir")
        elif resume:
            raise ConfigError(f"--resume: {self.root} holds no sweep to resume")
        elif write:
            atomic_write_json(self.config_snapshot, {"name": cfg.name, "hash": digest, "config": cfg.model_dump()})
            self.publish(self.config_snapshot)
