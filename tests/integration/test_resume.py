"""Exact resume on the tiny model with the real DeepSpeed engine: a trial SIGKILLed after a checkpoint (or
in the middle of writing the next one) and run again in the same dir ends with the very adapter an
uninterrupted trial ends with (same sha256) and the same per-step losses after the resumed step."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import checkpoints, trial
from tests.helpers import tiny_config, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
RUN = """
import json, sys
from orchestrator import config
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import trial
cfg = config.validate(json.loads(sys.argv[1]))
trial.run(cfg, "lora", {"r": 2}, SweepDir.of(cfg).trial("t"))
"""
# two policy updates per rollout: a resume restarts at a rollout, and the second update of each is against
# the rollout's log-probs (the ratio clip acts), so an exact resume must land between rollouts
GRPO = {"regime": "grpo", "grpo": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4, "minibatches": 2}}


def _config(model_dir: Path, out: Path, zero_stage: int, regime: str, resume_state: str = "last") -> dict:
    extra = GRPO if regime == "grpo" else {}
    return tiny_config(model_dir, out, steps=8, checkpoint_every=2, zero_stage=zero_stage, resume_state=resume_state,
                       **extra)


def _final_sha(result: dict) -> str:
    return checkpoints.read_meta(Path(result["checkpoints"][-1]["path"]))["sha256"]


def _killed_when(data: dict, step: int, begun: bool = False) -> None:
    """Run the trial in its own process and SIGKILL it once checkpoint `step` is complete or, with `begun`,
    once its writing has begun (its folder exists: the steps before it are trained, its files are not all
    there). Watching files, not a clock, keeps the kill in the same place on a fast machine and a slow one."""
    cfg = config.validate(data)
    folder = SweepDir.of(cfg).trial("t").checkpoint(step)
    marker = folder if begun else folder / checkpoints.META_FILE  # the JSON is written last
    proc = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(data)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(marker.exists, f"checkpoint {step} {'begun' if begun else 'complete'}", alive=proc, poll=0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir):
    """The uninterrupted trial of a (regime, ZeRO stage), trained once for every test that compares with it."""
    done: dict[tuple[str, int], dict] = {}

    def reference(regime: str, zero_stage: int) -> dict:
        if (regime, zero_stage) not in done:
            out = tmp_path_factory.mktemp(f"whole-{regime}-{zero_stage}")
            whole = config.validate(_config(tiny_model_dir, out, zero_stage, regime))
            result = trial.run(whole, "lora", {"r": 2}, SweepDir.of(whole).trial("t"))
            assert result["status"] == "completed", result.get("traceback")
            done[regime, zero_stage] = result
        return done[regime, zero_stage]
    return reference


@pytest.mark.parametrize("regime,zero_stage,kill_at", [("sft", 0, "after 4"), ("sft", 0, "inside 6"),
                                                       ("sft", 3, "after 4"), ("grpo", 0, "after 4"),
                                                       ("grpo", 3, "inside 6")])
def test_a_killed_trial_resumes_to_the_same_weights_bit_for_bit(tmp_path, tiny_model_dir, isolated_cache, regime,
                                                                 zero_stage, kill_at, uninterrupted):
    reference = uninterrupted(regime, zero_stage)
    data = _config(tiny_model_dir, tmp_path / "killed", zero_stage, regime)
    where, step = kill_at.split()
    _killed_when(data, int(step), begun=where == "inside")
    cfg = config.validate(data)
    trial_dir = SweepDir.of(cfg).trial("t")
    assert trial_dir.read_result() is None or trial_dir.read_result()["status"] == "running"
    resumed = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    assert resumed["status"] == "completed" and resumed["resumed"] == "exact", resumed.get("traceback")
    k = resumed["resumed_from_step"]
    assert 4 <= k < 8
    assert _final_sha(resumed) == _final_sha(reference)
    after = [r["loss"] for r in resumed["train_log"] if r["step"] > k]
    assert after == [r["loss"] for r in reference["train_log"] if r["step"] > k]
    assert [c["target"] for c in resumed["checkpoints"]] == [c["target"] for c in reference["checkpoints"]]


def test_resume_state_is_kept_for_the_newest_checkpoint_only_and_dropped_at_the_end(tmp_path, tiny_model_dir,
                                                                                     isolated_cache):
    """Killed once checkpoint 4 is whole: step 4 holds a resume state, and step 2 still holds one only if the
    kill fell between writing 4's and dropping 2's. The resume removes such a leftover (planted here, so the
    window is tested every run, not by chance), the next checkpoint drops its predecessor's, the end drops all."""
    data = _config(tiny_model_dir, tmp_path / "killed", 0, "sft")
    _killed_when(data, 4)
    trial_dir = SweepDir.of(config.validate(data)).trial("t")

    def with_state() -> list[str]:
        return [d.name for d in trial_dir.checkpoint_dirs() if (d / checkpoints.RESUME_META).is_file()]
    assert with_state()[-1] == "step_000004" and set(with_state()) <= {"step_000002", "step_000004"}
    for name in (checkpoints.RESUME_TENSORS, checkpoints.RESUME_META):  # the kill-between-write-and-drop window
        shutil.copy(trial_dir.checkpoint(4) / name, trial_dir.checkpoint(2) / name)
    seen: dict[int, list[str]] = {}
    result = trial.run(config.validate(data), "lora", {"r": 2}, trial_dir,
                       on_step=lambda step, _: seen.setdefault(step, with_state()))
    assert result["status"] == "completed" and result["resumed"] == "exact", result.get("traceback")
    assert seen[5] == ["step_000004"] and seen[7] == ["step_000006"]
    assert with_state() == []
    sizes = [c["bytes"] for c in result["checkpoints"]]
    assert all(s["weights"] > 0 and s["resume_state"] > 2 * s["weights"] for s in sizes)  # two moments + RNG


def test_without_a_resume_state_a_trial_resumes_from_its_weights_and_says_so(tmp_path, tiny_model_dir,
                                                                             isolated_cache):
    data = _config(tiny_model_dir, tmp_path / "killed", 0, "sft", resume_state="none")
    cfg = config.validate(data)
    trial_dir = SweepDir.of(cfg).trial("t")
    full = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    partial = dict(full, status="running", checkpoints=full["checkpoints"][:2],
                   train_log=[r for r in full["train_log"] if r["step"] <= 4])
    trial_dir.write_result(partial)
    for directory in trial_dir.checkpoint_dirs()[2:]:
        (directory / checkpoints.META_FILE).unlink()  # as if killed before step 6 was vouched for
    resumed = trial.run(cfg, "lora", {"r": 2}, trial_dir)
    assert resumed["status"] == "completed" and resumed["resumed"] == "weights"
    assert resumed["checkpoints"][0]["bytes"]["resume_state"] == 0


def test_a_trial_tune_never_recorded_is_continued_by_its_successor_not_redone(tmp_path, tiny_model_dir,
                                                                             isolated_cache, uninterrupted):
    """A driver killed before Tune saved its state leaves trial "t" running with checkpoints; the resumed
    sweep runs that configuration under a new id, which takes over t's checkpoints and resumes exactly."""
    from orchestrator.sweep.takeover import continue_interrupted, same_config_trials, trial_config_hash

    reference = uninterrupted("sft", 0)

    data = _config(tiny_model_dir, tmp_path / "killed", 0, "sft")
    _killed_when(data, 4)
    cfg = config.validate(data)
    where = SweepDir.of(cfg)

    def continued(setting: dict, trial_id: str) -> str | None:
        trial_dir = where.trial(trial_id)
        return continue_interrupted(where, same_config_trials(where, trial_config_hash(cfg, "lora", setting), trial_dir),
                                    trial_dir)

    assert continued({"r": 3}, "other-config") is None
    successor = where.trial("successor")
    assert continued({"r": 2}, "successor") == "t"
    result = trial.run(cfg, "lora", {"r": 2}, successor)
    assert result["status"] == "completed" and result["resumed"] == "exact" and result["resumed_from_step"] >= 4
    assert _final_sha(result) == _final_sha(reference)
    assert all(Path(c["path"]).is_relative_to(successor.root) for c in result["checkpoints"])
    left = where.trial("t").read_result()
    assert left["status"] == "abandoned" and left["continued_by"] == "successor" and left["checkpoints"] == []
    assert continued({"r": 2}, "third") is None  # taken once only
