"""MLflow: one parent run per sweep, one nested run per trial, the base model's scores as their own run.

Trial workers never talk to MLflow. Every trial writes its result JSON (and checkpoints) locally first;
the driver replays each finished trial into MLflow from those files (`sync_trial`). So a tracking server
that is down costs nothing but a later `peft-arena sync`, and syncing is idempotent: a trial's run is
found by its `peft_arena.trial_id` tag and left alone when it already holds this exact result.
Runs live in a local SQLite backend under the sweep dir by default (never the deprecated ./mlruns store),
or on a tracking server (`tracking.uri: http://...`) for clusters.
"""
from __future__ import annotations

import os
import sys
import time
import urllib.request
from typing import Any, Callable

import yaml

from orchestrator.config import ConfigError, SweepConfig, digest
from orchestrator.process import git_commit, is_loopback, package_versions
from orchestrator.sweep_dir import SweepDir, TrialDir

TAG_SWEEP = "peft_arena.sweep"
TAG_KIND = "peft_arena.kind"  # sweep | trial | base
TAG_TRIAL = "peft_arena.trial_id"
TAG_DIGEST = "peft_arena.result_sha256"
# MLflow 3's UI opens GenAI views unless an experiment says it is model training: ours always is.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT = "mlflow.parentRunId"
RUN_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "failed": "FAILED", "abandoned": "KILLED"}


def tracking_uri(cfg: SweepConfig) -> str:
    return cfg.tracking.uri or SweepDir.of(cfg).mlflow_uri


def _client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a dead server fails fast, not in minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "creating database tables" is no news to a user

    return MlflowClient(tracking_uri=uri)


class Tracker:
    """The MLflow side of one sweep."""

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        self.client = _client(self.uri)
        self.experiment_id = self._experiment()
        self.parent_id = self._parent_run()

    # ------------------------------------------------------------------------------- setup

    def _experiment(self) -> str:
        name = self.cfg.tracking.experiment or self.cfg.name
        try:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            local = self.uri.startswith("sqlite:")  # a server chooses (and proxies) its own artifact store
            return self.client.create_experiment(name, tags=EXPERIMENT_KIND,
                                                 artifact_location=SweepDir.of(self.cfg).mlflow_artifacts.as_uri()
                                                 if local else None)
        except Exception as err:  # noqa: BLE001 - any failure to reach the store is the same user problem
            raise ConfigError(f"tracking.uri = {self.uri!r}: MLflow is not reachable ({str(err).splitlines()[0][:200]})") from None

    def _find(self, kind: str, extra: str = "") -> Any:
        query = f"tags.`{TAG_SWEEP}` = '{self.cfg.name}' and tags.`{TAG_KIND}` = '{kind}'{extra}"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=2)
        return runs[0] if runs else None

    def _parent_run(self) -> str:
        existing = self._find("sweep")
        if existing is not None:  # a resumed sweep keeps its parent run
            return existing.info.run_id
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=f"sweep {self.cfg.name}",
                                     tags={TAG_SWEEP: self.cfg.name, TAG_KIND: "sweep",
                                           "peft_arena.sampler": self.cfg.search.sampler,
                                           "mlflow.source.git.commit": git_commit(),
                                           "peft_arena.config_hash": digest(self.cfg.model_dump())})
        run_id = run.info.run_id
        params = {"sampler": self.cfg.search.sampler, "num_samples": self.cfg.search.num_samples,
                  "objectives": ",".join(f"{o.name}:{o.mode}" for o in self.cfg.search.objectives),
                  "model": self.cfg.model.name, "train_task": self.cfg.train.task,
                  "target_suite": str(self.cfg.eval.target_suite), "retention_suite": str(self.cfg.eval.retention_suite),
                  **{f"version.{k}": v for k, v in package_versions().items()}}
        self.client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        self.client.log_text(run_id, yaml.safe_dump(self.cfg.model_dump(), sort_keys=False), "sweep_config.yaml")
        return run_id

    # ------------------------------------------------------------------------------- trials

    def sync_trial(self, result: dict[str, Any]) -> str:
        """The trial's nested run, created or replaced so that it holds exactly this result."""
        result_digest = digest(result)
        existing = self._find("trial", f" and tags.`{TAG_TRIAL}` = '{result['trial_id']}'")
        if existing is not None:
            if existing.data.tags.get(TAG_DIGEST) == result_digest:
                return existing.info.run_id  # already synced: nothing is logged twice
            self.client.delete_run(existing.info.run_id)  # an older (partial) sync of this trial
        run = self.client.create_run(self.experiment_id, run_name=f"{result['method']} {result['trial_id']}",
                                     start_time=_millis(result.get("started_at")),
                                     tags={TAG_SWEEP: self.cfg.name, TAG_KIND: "trial", PARENT: self.parent_id,
                                           TAG_TRIAL: result["trial_id"], "peft_arena.status": result["status"],
                                           **({"peft_arena.failure_reason": str(result["failure_reason"])[:5000]}
                                              if result.get("failure_reason") else {})})
        run_id = run.info.run_id
        self._log_trial(run_id, result)
        self.client.set_tag(run_id, TAG_DIGEST, result_digest)  # last: a run without it is a partial sync
        self.client.set_terminated(run_id, RUN_STATUS.get(result["status"], "KILLED"),
                                   end_time=_millis(result.get("ended_at")))
        return run_id

    def _log_trial(self, run_id: str, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params = {"method": result["method"], **{f"setting.{k}": v for k, v in result["setting"].items()},
                  "budget": result.get("budget"), "trainable_params": result.get("params", {}).get("trainable"),
                  "total_params": result.get("params", {}).get("total"),
                  "lr": result["config"]["train"]["lr"], "steps": result["config"]["train"]["steps"],
                  "seed": result["config"]["train"]["seed"], "node_id": result.get("node_id")}
        metrics = [Metric(key, float(value), now, rec["step"]) for rec in result.get("train_log", [])
                   for key, value in rec.items() if key != "step"]
        for point in result.get("checkpoints", []):
            values = {"target": point["target"]["score"], "retention": point["retention"]["score"],
                      "gain": point["gain"], "forgetting": point["forgetting"]}
            for kind in ("target", "retention"):
                values.update({f"{kind}.{task}": scores["score"] for task, scores in point[kind]["tasks"].items()})
            metrics += [Metric(k, float(v), now, point["step"]) for k, v in values.items()]
        if "final" in result:
            metrics += [Metric(f"final.{k}", float(v), now, result["final"]["step"])
                        for k, v in result["final"].items() if k != "step"]
        metrics += [Metric(f"time.{k}", float(v), now, 0) for k, v in result.get("timings", {}).items()]
        if result.get("peak_rss_mb"):
            metrics.append(Metric("peak_rss_mb", float(result["peak_rss_mb"]), now, 0))
        param_list = [Param(k, str(v)) for k, v in params.items() if v is not None]
        for i in range(0, max(len(metrics), 1), 900):  # MLflow caps a batch at 1000 entries
            self.client.log_batch(run_id, metrics=metrics[i:i + 900], params=param_list if i == 0 else [])
        self.client.log_dict(run_id, result, TrialDir(result["trial_dir"]).result_path.name)
        if self.cfg.tracking.log_checkpoints != "none":
            points = result.get("checkpoints", [])
            chosen = points[-1:] if self.cfg.tracking.log_checkpoints == "final" else points
            trial_dir = TrialDir(result["trial_dir"])
            for point in chosen:  # artifacts mirror the trial dir's own folders
                if os.path.isdir(point["path"]):
                    self.client.log_artifacts(run_id, point["path"], trial_dir.relative(point["path"]))

    def sync_base(self, result: dict[str, Any]) -> None:
        """The base model's scores, once per sweep, as their own nested run."""
        if "base" not in result or self._find("base") is not None:
            return
        from mlflow.entities import Metric

        run = self.client.create_run(self.experiment_id, run_name="base model",
                                     tags={TAG_SWEEP: self.cfg.name, TAG_KIND: "base", PARENT: self.parent_id})
        now = int(time.time() * 1000)
        metrics = []
        for kind in ("target", "retention"):
            metrics.append(Metric(kind, float(result["base"][kind]["score"]), now, 0))
            metrics += [Metric(f"{kind}.{t}", float(s["score"]), now, 0) for t, s in result["base"][kind]["tasks"].items()]
        self.client.log_batch(run.info.run_id, metrics=metrics)
        self.client.log_dict(run.info.run_id, result["base"], "base_scores.json")
        self.client.set_terminated(run.info.run_id, "FINISHED")

    def sync_all(self, results: list[dict[str, Any]]) -> int:
        for result in results:
            if result.get("status") in RUN_STATUS:
                self.sync_base(result)
                self.sync_trial(result)
        return len(results)

    def tag_trial(self, trial_id: str, key: str, value: str) -> bool:
        """A tag on a trial's run (e.g. where its adapter was exported); False when the trial has no run."""
        run = self._find("trial", f" and tags.`{TAG_TRIAL}` = '{trial_id}'")
        if run is None:
            return False
        self.client.set_tag(run.info.run_id, key, value)
        return True

    def log_rewind(self, record: dict[str, Any]) -> str | None:
        """A rewound operating point as a child of its trial's run: its validation and test scores, the
        final point's, and the rewind record."""
        from mlflow.entities import Metric, Param

        trial_run = self._find("trial", f" and tags.`{TAG_TRIAL}` = '{record['trial_id']}'")
        if trial_run is None:
            return None
        run = self.client.create_run(self.experiment_id, run_name=f"rewound {record['chosen']['label']}",
                                     tags={TAG_SWEEP: self.cfg.name, TAG_KIND: "rewind", PARENT: trial_run.info.run_id,
                                           TAG_TRIAL: record["trial_id"]})
        now = int(time.time() * 1000)
        values = {"validation.target": record["chosen"]["target"], "validation.retention": record["chosen"]["retention"],
                  "test.target": record["chosen_test"]["target"], "test.retention": record["chosen_test"]["retention"],
                  "final.target": record["final"]["target"], "final.retention": record["final"]["retention"]}
        params = {"point": record["chosen"]["label"], "rule": record["rule"], "checkpoint": record["checkpoint"]}
        self.client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                              params=[Param(k, str(v)) for k, v in params.items()])
        self.client.log_dict(run.info.run_id, record, TrialDir(record["trial_dir"]).rewind_record.name)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def log_sweep_files(self, paths: list[Any]) -> None:
        """Sweep-level outputs (analysis JSON, HTML report) as artifacts of the sweep's parent run, under
        their path in the sweep dir."""
        root = SweepDir.of(self.cfg).root
        for path in paths:
            if path.is_file():
                folder = path.parent.relative_to(root).as_posix()
                self.client.log_artifact(self.parent_id, str(path), None if folder == "." else folder)


def best_effort(cfg: SweepConfig, what: str, action: Callable[[Tracker], Any],
                tracker: Tracker | None = None) -> Tracker | None:
    """Run `action` against the sweep's MLflow store, or warn in one line: everything tracked is also in
    the sweep dir, and `peft-arena sync` replays it later (idempotently). Returns the tracker to reuse,
    or None when tracking is off or failed."""
    if not cfg.tracking.enabled:
        return None
    try:
        tracker = tracker or Tracker(cfg)
        action(tracker)
        return tracker
    except Exception as err:  # noqa: BLE001 - tracking never takes a sweep or an analysis down
        where = SweepDir.of(cfg)
        print(f"warning: MLflow: could not {what} ({str(err).splitlines()[0][:160]}); it is kept in {where}; "
              f"run `peft-arena sync {where}` later", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------------------------- ui


def _millis(epoch_s: float | None) -> int | None:
    """MLflow's timestamps; None (results written before trials recorded wall-clock times) means "now"."""
    return int(epoch_s * 1000) if epoch_s is not None else None


def server_command(backend_uri: str, artifacts: Any, host: str, port: int) -> list[str]:
    """`mlflow server` on a store and artifact folder (a sweep's: `SweepDir.mlflow_uri`, `.mlflow_artifacts`).
    Loopback unless told otherwise; a wider bind names the Host headers it answers."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port), "--workers", "1"]
    if not is_loopback(host):
        import socket

        command += ["--allowed-hosts", f"{host}:{port},{socket.gethostname()}:{port},localhost:{port},127.0.0.1:{port}"]
    return command


def sweep_server_command(cfg: SweepConfig, host: str, port: int) -> list[str]:
    where = SweepDir.of(cfg)
    return server_command(where.mlflow_uri, where.mlflow_artifacts, host, port)


def wait_healthy(url: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - loopback URL we built
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"MLflow server at {url} did not become healthy in {timeout:.0f} s")

