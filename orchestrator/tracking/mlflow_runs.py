"""MLflow: one parent run per sweep, one nested run per trial, the base model's scores as their own run.

A trial's run is created when the trial starts and its per-step metrics and checkpoint scores stream into
it while it trains (`LiveRun`, batched, with MLflow's system metrics beside them). The result JSON on disk
stays the record: the driver replays each finished trial from it (`sync_trial`), adding exactly the metric
points the live run lacks (by key and step), so a tracking server that was down, or a worker that could
not reach it, costs nothing but a later `peft-arena sync`, and no point is ever logged twice.
Runs live in a local SQLite backend under the sweep dir by default (never the deprecated ./mlruns store),
or on a tracking server (`tracking.uri: http://...`) for clusters.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
import sys
import time
from typing import Any, Callable

import yaml

from evals import uncertainty
from orchestrator.config import ConfigError, SweepConfig, digest
from orchestrator.process import git_commit, package_versions
from orchestrator.storage.sweep_dir import Status, SweepDir, TrialDir

TAG_SWEEP = "peft_arena.sweep"
TAG_KIND = "peft_arena.kind"  # sweep | trial | base
TAG_TRIAL = "peft_arena.trial_id"
TAG_DIGEST = "peft_arena.result_sha256"
# MLflow 3's UI opens GenAI views unless an experiment says it is model training: ours always is.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT = "mlflow.parentRunId"
RUN_STATUS = {Status.COMPLETED: "FINISHED", Status.STOPPED_EARLY: "FINISHED", Status.FAILED: "FAILED",
              Status.ABANDONED: "KILLED"}
BATCH = 900  # MLflow caps a log_batch at 1000 entries
TRIALS_VIEW = "peft-arena-trials"  # the shared view `peft-arena ui` opens (MLflow's viewStateShareKey)
VIEW_METRICS = ("final.gain", "final.forgetting", "final.gain.ci_low", "final.gain.ci_high",
                "final.forgetting.ci_low", "final.forgetting.ci_high", "final.target", "final.retention")


def tracking_uri(cfg: SweepConfig) -> str:
    return cfg.tracking.uri or SweepDir.of(cfg).mlflow_uri


def live_from_workers(cfg: SweepConfig) -> bool:
    """Whether trials log live from their workers. Not into the default SQLite store of a sweep dir on
    object storage: that file is the driver's (in its mirror), out of the workers' reach; the driver then
    logs each trial when it ends, from its result. A tracking server (`tracking.uri`) works from anywhere."""
    return cfg.tracking.enabled and cfg.tracking.live and (cfg.tracking.uri is not None or SweepDir.of(cfg).store is None)


def _client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a dead server fails fast, not in minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "creating database tables" is no news to a user

    return MlflowClient(tracking_uri=uri)


class Tracker:
    """The MLflow side of one sweep."""

    def __init__(self, cfg: SweepConfig, create: bool = True) -> None:
        """`create=False` (a trial's worker): attach to the sweep's experiment and run, which the driver
        created before any trial started; LookupError when they are not there."""
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        self.client = _client(self.uri)
        self.experiment_id = self._experiment(create)
        self.parent_id = self._parent_run(create)

    # ------------------------------------------------------------------------------- setup

    def _experiment(self, create: bool) -> str:
        name = self.cfg.tracking.experiment or self.cfg.name
        try:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            if not create:
                raise LookupError(f"no MLflow experiment {name!r}")
            local = self.uri.startswith("sqlite:")  # a server chooses (and proxies) its own artifact store
            return self.client.create_experiment(name, tags=EXPERIMENT_KIND,
                                                 artifact_location=SweepDir.of(self.cfg).mlflow_artifact_location
                                                 if local else None)
        except LookupError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure to reach the store is the same user problem
            raise ConfigError(f"tracking.uri = {self.uri!r}: MLflow is not reachable ({str(err).splitlines()[0][:200]})") from None

    def share_trials_view(self) -> str:
        """The experiment's runs as `peft-arena ui` opens them (the URL fragment): grouped by kind, so each
        trial is a row of the "trial" group rather than folded under the sweep's parent run (a shared view
        cannot expand a parent: MLflow leaves `runsExpanded` out of it), with the columns that decide
        between trials first: method, final gain and forgetting, their 95% intervals, target and retention,
        then the setting, budget and trainable count. MLflow keeps a shared view as an experiment tag
        (`mlflow.sharedViewState.<key>`, plain JSON of its UI state) that a URL names; it is rewritten at
        every start, so setting keys of newer trials join the columns."""
        trials = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'trial'",
                                         max_results=1000)
        settings = sorted({key for run in trials for key in run.data.params if key.startswith("setting.")})
        columns = ["params.`method`", *(f"metrics.`{key}`" for key in VIEW_METRICS),
                   *(f"params.`{key}`" for key in (*settings, "budget", "trainable_params"))]
        state = {"selectedColumns": columns, "columnOrder": columns,  # in this order, not MLflow's alphabetical
                 "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": TAG_KIND}]}}
        self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{TRIALS_VIEW}", json.dumps(state))
        return f"#/experiments/{self.experiment_id}/runs?viewStateShareKey={TRIALS_VIEW}"

    def _find(self, kind: str, extra: str = "") -> Any:
        query = f"tags.`{TAG_SWEEP}` = '{self.cfg.name}' and tags.`{TAG_KIND}` = '{kind}'{extra}"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=2)
        return runs[0] if runs else None

    def _parent_run(self, create: bool) -> str:
        existing = self._find("sweep")
        if existing is not None:  # a resumed sweep keeps its parent run
            return existing.info.run_id
        if not create:
            raise LookupError(f"no MLflow run for sweep {self.cfg.name!r}")
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

    def start_sweep(self) -> None:
        """A (resumed) sweep is running again: its parent run says so until `finish_sweep`."""
        self.client.update_run(self.parent_id, status="RUNNING")

    def finish_sweep(self, status: str, counts: dict[str, int], hypervolumes: list[float],
                     files: list[Any]) -> None:
        """The parent run tells the sweep's story: how many trials ended how (at step = trials in the sweep,
        so a resumed sweep adds a point), the front's hypervolume after each completed trial (step k: the
        first k), the sweep-level outputs that exist (`log_sweep_files` skips the others); then its status. Points already there are kept."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        total = sum(v for k, v in counts.items() if k != "reused")
        metrics = [Metric(f"trials.{k}", float(v), now, total) for k, v in counts.items()]
        metrics += [Metric("hypervolume", float(v), now, k) for k, v in enumerate(hypervolumes, start=1)]
        self.log_missing(self.parent_id, metrics, self.logged_points(self.parent_id))
        self.log_sweep_files(files)
        self.client.set_terminated(self.parent_id, status)

    def trial_run(self, result: dict[str, Any]) -> tuple[str, bool]:
        """The trial's nested run, found by its trial-id tag or created (spanning the trial's own start
        time, with the params known before it trains); True when it was created now."""
        existing = self._find("trial", f" and tags.`{TAG_TRIAL}` = '{result['trial_id']}'")
        if existing is not None:
            return existing.info.run_id, False
        run = self.client.create_run(self.experiment_id, run_name=f"{result['method']} {result['trial_id']}",
                                     start_time=_millis(result.get("started_at")),
                                     tags={TAG_SWEEP: self.cfg.name, TAG_KIND: "trial", PARENT: self.parent_id,
                                           TAG_TRIAL: result["trial_id"], "peft_arena.status": result["status"]})
        self._log_params(run.info.run_id, result, set())
        return run.info.run_id, True

    def sync_trial(self, result: dict[str, Any]) -> str:
        """The trial's nested run, made to hold exactly this result: the metric points a live run (or an
        earlier sync) already logged are kept and only the missing ones added. A run whose points disagree
        with the result (a resumed trial that did not replay its steps exactly) is replaced instead, so
        its history always equals the result's."""
        result_digest = digest(result)
        run_id, created = self.trial_run(result)
        run = self.client.get_run(run_id)
        if run.data.tags.get(TAG_DIGEST) == result_digest:
            return run_id  # already synced: nothing is logged twice
        metrics = trial_metrics(result)
        logged = {} if created else self.logged_points(run_id)
        if any(not _same(logged.get((m.key, m.step), m.value), m.value) for m in metrics):
            self.client.delete_run(run_id)
            run_id, logged = self.trial_run(result)[0], {}
            run = self.client.get_run(run_id)
        self._log_params(run_id, result, set(run.data.params))
        self.log_missing(run_id, metrics, logged)
        self.client.set_tag(run_id, "peft_arena.status", result["status"])
        if result.get("failure_reason"):
            self.client.set_tag(run_id, "peft_arena.failure_reason", str(result["failure_reason"])[:5000])
        self._log_trial_files(run_id, result, run.info.artifact_uri)
        self.client.set_tag(run_id, TAG_DIGEST, result_digest)  # last: a run without it is a partial sync
        self.client.set_terminated(run_id, RUN_STATUS.get(result["status"], "KILLED"),
                                   end_time=_millis(result.get("ended_at")))
        return run_id

    def logged_points(self, run_id: str) -> dict[tuple[str, int], float]:
        """Every (key, step) point the run holds and its value; system metrics are MLflow's own, not ours."""
        keys = [k for k in self.client.get_run(run_id).data.metrics if not k.startswith("system/")]
        return {(m.key, m.step): m.value for key in keys for m in self.client.get_metric_history(run_id, key)}

    def log_missing(self, run_id: str, metrics: list[Any], logged: dict[tuple[str, int], float]) -> None:
        """The points whose (key, step) the run does not hold yet, in as few requests as MLflow allows."""
        missing = [m for m in metrics if (m.key, m.step) not in logged]
        for i in range(0, len(missing), BATCH):
            self.client.log_batch(run_id, metrics=missing[i:i + BATCH])

    def _log_params(self, run_id: str, result: dict[str, Any], present: set[str]) -> None:
        """Params not on the run yet (MLflow refuses to change one, and a live run logged the early ones)."""
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in trial_params(result).items() if v is not None and k not in present]
        if params:
            self.client.log_batch(run_id, params=params)

    def _log_trial_files(self, run_id: str, result: dict[str, Any], artifact_uri: str) -> None:
        """The result and the chosen checkpoints as artifacts, under the trial dir's own folders. A sweep dir
        on object storage whose artifact root is on the same store copies them there inside the store
        (the driver downloads nothing); otherwise they are uploaded from the driver's copy."""
        here = TrialDir(result["trial_dir"])
        self.client.log_dict(run_id, result, here.result_path.name)
        if here.replies_root.is_dir():  # every generated reply, to read beside the scores in the UI
            self.client.log_artifacts(run_id, str(here.replies_root), here.relative(here.replies_root))
        if self.cfg.tracking.log_checkpoints == "none":
            return
        points = result.get("checkpoints", [])
        chosen = points[-1:] if self.cfg.tracking.log_checkpoints == "final" else points
        where = SweepDir.of(self.cfg)
        trial_dir = where.trial(result["trial_id"])
        for point in chosen:
            holder = trial_dir.holder(point["path"])  # a duplicate's checkpoints are its original's
            folder = holder.relative(point["path"])
            if where.copy_within_store(Path(point["path"]), f"{artifact_uri}/{folder}"):
                continue
            if not os.path.isdir(point["path"]):
                holder.fetch()  # a remote sweep dir whose artifacts go elsewhere (a tracking server's store)
            if os.path.isdir(point["path"]):
                self.client.log_artifacts(run_id, point["path"], folder)

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


def trial_params(result: dict[str, Any]) -> dict[str, Any]:
    """A trial run's params (None: not known yet, e.g. trainable counts before the model is wrapped)."""
    train = result["config"]["train"]
    return {"method": result["method"], **{f"setting.{k}": v for k, v in result["setting"].items()},
            "budget": result.get("budget"), "trainable_params": result.get("params", {}).get("trainable"),
            "total_params": result.get("params", {}).get("total"), "lr": train["lr"], "steps": train["steps"],
            "seed": train["seed"], "node_id": result.get("node_id")}


def step_metrics(record: dict[str, float], now: int) -> list[Any]:
    """One training step's log record as metric points at its step."""
    from mlflow.entities import Metric

    return [Metric(key, float(value), now, record["step"]) for key, value in record.items() if key != "step"]


def interval_metrics(point: dict[str, Any]) -> dict[str, float]:
    """gain_ci = [low, high] as gain.ci_low and gain.ci_high: MLflow metrics are single numbers."""
    return {f"{name}.ci_{end}": point[f"{name}_ci"][i] for name in uncertainty.DELTAS if f"{name}_ci" in point
            for i, end in enumerate(("low", "high"))}


def checkpoint_metrics(point: dict[str, Any], now: int) -> list[Any]:
    """A scored checkpoint's suite and task scores, gain and forgetting, at its step."""
    from mlflow.entities import Metric

    values = {"target": point["target"]["score"], "retention": point["retention"]["score"],
              "gain": point["gain"], "forgetting": point["forgetting"], **interval_metrics(point)}
    for kind in ("target", "retention"):
        values.update({f"{kind}.{task}": scores["score"] for task, scores in point[kind]["tasks"].items()})
    return [Metric(k, float(v), now, point["step"]) for k, v in values.items()]


def trial_metrics(result: dict[str, Any]) -> list[Any]:
    """Every metric point of a trial result: per step, per checkpoint, final values, timings."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [m for rec in result.get("train_log", []) for m in step_metrics(rec, now)]
    metrics += [m for point in result.get("checkpoints", []) for m in checkpoint_metrics(point, now)]
    if "final" in result:
        final = {k: v for k, v in result["final"].items() if k != "step" and not k.endswith("_ci")}
        metrics += [Metric(f"final.{k}", float(v), now, result["final"]["step"])
                    for k, v in (final | interval_metrics(result["final"])).items()]
    metrics += [Metric(f"time.{k}", float(v), now, 0) for k, v in result.get("timings", {}).items()]
    if result.get("peak_rss_mb"):
        metrics.append(Metric("peak_rss_mb", float(result["peak_rss_mb"]), now, 0))
    return metrics


def _millis(epoch_s: float | None) -> int | None:
    """MLflow's timestamps; None (results written before trials recorded wall-clock times) means "now"."""
    return int(epoch_s * 1000) if epoch_s is not None else None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


class LiveRun:
    """A trial's MLflow run while the trial trains, driven from the trial's own process: created at the
    start (with its params), step metrics batched into one `log_batch` every `tracking.live_every_s`
    seconds, each checkpoint's scores at once, MLflow's system metrics (CPU, memory, disk, network, GPU
    when present) sampled beside them. Points an earlier attempt of the trial logged are not logged again.
    Any failure to reach the store turns live logging off for the rest of the trial with one warning: the
    result JSON keeps everything and the driver's sync adds what the run lacks."""

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.tracker: Tracker | None = None
        self.run_id = ""
        self.logged: set[tuple[str, int]] = set()
        self.pending: list[Any] = []
        self.last_flush = time.monotonic()
        self.monitor: Any = None

    def start(self, result: dict[str, Any]) -> None:
        def attach() -> None:
            self.tracker = Tracker(self.cfg, create=False)
            self.run_id, created = self.tracker.trial_run(result)
            if not created:  # a retry or resumed attempt: keep what the earlier one logged
                self.logged = set(self.tracker.logged_points(self.run_id))
                self.tracker.client.update_run(self.run_id, status="RUNNING")
            self.monitor = _system_metrics(self.run_id, self.tracker.uri, self.cfg.tracking.system_metrics_every_s,
                                           resume=not created)

        self._safely("start the trial's run", attach)

    def log_step(self, step: int, record: dict[str, float]) -> None:
        del step  # the record carries it
        self._queue(step_metrics(record, int(time.time() * 1000)))
        if time.monotonic() - self.last_flush >= self.cfg.tracking.live_every_s:
            self.flush()

    def log_checkpoint(self, point: dict[str, Any]) -> None:
        self._queue(checkpoint_metrics(point, int(time.time() * 1000)))
        self.flush()

    def _queue(self, metrics: list[Any]) -> None:
        if self.tracker is not None:
            self.pending += [m for m in metrics if (m.key, m.step) not in self.logged]

    def flush(self) -> None:
        pending, self.pending, self.last_flush = self.pending, [], time.monotonic()
        if self.tracker is None or not pending:
            return
        tracker = self.tracker
        self._safely("log live metrics", lambda: tracker.log_missing(self.run_id, pending, {}))
        self.logged.update((m.key, m.step) for m in pending)

    def close(self) -> None:
        """The last batch; the run itself is ended by the driver's sync, from the result."""
        self.flush()
        self._stop_monitor()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None

    def _safely(self, what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - tracking never costs a trial; the sync fills the gap
            print(f"warning: MLflow: could not {what} ({str(err).splitlines()[0][:160]}); live tracking is off "
                  f"for this trial, its result is synced when it ends", file=sys.stderr)
            self.tracker = None
            self._stop_monitor()


def _system_metrics(run_id: str, uri: str, every_s: float, resume: bool) -> Any:
    """MLflow's own sampler of CPU / memory / disk / network (and GPU, with pynvml) into the run."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=every_s, resume_logging=resume, tracking_uri=uri)
    monitor.start()
    return monitor


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
