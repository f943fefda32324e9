"""Trials that another trial's work can stand for: a configuration the sweep already finished is reused,
and a trial a killed driver left behind is continued from its checkpoints by its successor; what no
successor took over is closed as abandoned once the search ends."""
from __future__ import annotations

import os
import platform
import time
from typing import Any

from orchestrator.config import SweepConfig, config_hash
from orchestrator.storage.sweep_dir import Status, SweepDir, TrialDir, has_final_point
from orchestrator.trials import trial


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

    from orchestrator.sweep.searcher import fail_orphans

    return len(fail_orphans(optuna.load_study(study_name=cfg.name, storage=SweepDir.of(cfg).optuna_url)))
