"""Fault injection on a real local Ray cluster with the tiny model. After each fault the sweep ends with
every planned trial completed or failed with a reason, nothing duplicated in Optuna or MLflow, and no
corrupted result or checkpoint accepted."""
from __future__ import annotations

import json
import os
import signal

import optuna
import pytest

from tests import sweeps as sw

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _uninterrupted(sweep_dir, result: dict, tmp_path) -> dict:
    """The same trial config run again from scratch, in this process, without any interruption."""
    from orchestrator import config as config_module
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import trial

    snapshot = SweepDir(sweep_dir).load_config().model_dump()
    cfg = config_module.validate(snapshot | {"train": result["config"]["train"], "output_dir": str(tmp_path / "ref")})
    return trial.run(cfg, result["method"], result["setting"], SweepDir.of(cfg).trial(result["trial_id"]))


def test_driver_sigkill_then_resume_finishes_exactly_the_planned_trials(tmp_path, tiny_model_dir, cluster,
                                                                        isolated_cache):
    config = sw.write_config(tmp_path, tiny_model_dir, samples=4, concurrent=1, steps=12, checkpoint_every=4,
                             tracking={"live_every_s": 0})
    sweep_dir = tmp_path / "sweep"
    proc = sw.sweep(config, cluster, start_new_session=True)

    def one_done_and_one_half_way() -> bool:
        found = sw.results(sweep_dir)
        return any(r["status"] == "completed" for r in found) and \
            any(r["status"] == "running" and r["checkpoints"] for r in found)

    sw.wait_for(one_done_and_one_half_way, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it spawned, mid-sweep
    for running in [r for r in sw.results(sweep_dir) if r["status"] == "running"]:
        try:  # and the trial in flight on the cluster, which would otherwise outlive its driver a while
            os.kill(running["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    finished_before = {r["trial_id"] for r in sw.results(sweep_dir) if r["status"] == "completed"}
    assert 0 < len(finished_before) < 4

    resumed = sw.sweep(config, cluster, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    finished = sw.results(sweep_dir)
    completed = [r["trial_id"] for r in finished if r["status"] == "completed"]
    assert len(completed) == 4 and len(set(completed)) == 4
    assert finished_before <= set(completed)  # nothing finished was lost or redone under a new id
    study = sw.study(sweep_dir)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert optuna.trial.TrialState.RUNNING not in states
    # the trial killed half way resumed exactly: its final scores are an uninterrupted run's
    resumed_trials = [r for r in finished if r.get("resumed")]
    assert resumed_trials and all(r["resumed"] == "exact" for r in resumed_trials)
    for result in resumed_trials:
        reference = _uninterrupted(sweep_dir, result, tmp_path)
        assert result["final"] == reference["final"]
        assert [c["step"] for c in result["checkpoints"]] == [c["step"] for c in reference["checkpoints"]]
    _check_tracking_after_resume(sweep_dir, finished)


def test_ctrl_c_interrupts_the_sweep_and_resume_finishes_it(tmp_path, tiny_model_dir, cluster):
    """Ctrl-C (SIGINT to the driver) mid-trial: exit 130 and the sweep's run KILLED, no trial closed as
    abandoned or failed; `--resume` then finishes every planned trial."""
    config = sw.write_config(tmp_path, tiny_model_dir, samples=3, concurrent=1, steps=40, checkpoint_every=4,
                             tracking={"live_every_s": 0})
    sweep_dir = tmp_path / "sweep"
    # the sweep as a terminal starts it: a shell runs a background job (`make test &`) with SIGINT ignored,
    # and children inherit that, so a sweep started under such a test run would never see the Ctrl-C
    proc = sw.sweep(config, cluster, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def mid_sweep() -> bool:
        """A trial part-way with a trial still to come: a signal after the sweep's end would prove nothing
        (on a fast machine a 12-step trial was over before the signal landed, and so was the sweep)."""
        results = sw.results(sweep_dir)
        return len(results) < 3 and any(r["status"] == "running" and r["checkpoints"] for r in results)

    sw.wait_for(mid_sweep, proc)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted; results written so far are kept" in output
    assert not [r for r in sw.results(sweep_dir) if r["status"] in ("abandoned", "failed")]
    for running in [r for r in sw.results(sweep_dir) if r["status"] == "running"]:
        try:  # the trial in flight on the cluster would outlive its driver a while
            os.kill(running["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass

    resumed = sw.sweep(config, cluster, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    finished = sw.results(sweep_dir)
    assert [r["status"] for r in finished].count("completed") == 3
    assert not [r for r in finished if r["status"] == "failed"]


def _check_tracking_after_resume(sweep_dir, finished) -> None:
    """MLflow after a killed and resumed sweep: the sweep's run FINISHED with its story, one run per trial
    whose loss history equals its result's, step for step, although the killed trial streamed part of it."""
    from mlflow import MlflowClient

    from orchestrator.storage.sweep_dir import SweepDir

    client = MlflowClient(SweepDir(sweep_dir).mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("peft_arena.kind") == "sweep")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials.completed"] == 4
    trials = {r.data.tags["peft_arena.trial_id"]: r for r in runs if r.data.tags.get("peft_arena.kind") == "trial"}
    for result in finished:
        if result["status"] == "completed":
            loss = client.get_metric_history(trials[result["trial_id"]].info.run_id, "loss")
            assert sorted((m.step, m.value) for m in loss) == [(r["step"], r["loss"]) for r in result["train_log"]]


def test_killed_worker_with_a_truncated_checkpoint_resumes_from_the_last_good_one(tmp_path, tiny_model_dir, cluster):
    """SIGKILL of a trial's worker mid-step, its newest checkpoint truncated on disk: the retry rejects
    that checkpoint (checksum), resumes from the one before, and the trial completes."""
    config = sw.write_config(tmp_path, tiny_model_dir, samples=1, concurrent=1, steps=400, checkpoint_every=50)
    sweep_dir = tmp_path / "sweep"
    proc = sw.sweep(config, cluster)

    def two_checkpoints() -> bool:
        return any(r["status"] == "running" and len(r["checkpoints"]) >= 2 for r in sw.results(sweep_dir))

    sw.wait_for(two_checkpoints, proc)
    victim = next(r for r in sw.results(sweep_dir) if r["status"] == "running")
    os.kill(victim["pid"], signal.SIGKILL)
    newest = sorted((sweep_dir / "trials" / victim["trial_id"] / "checkpoints").glob("step_*"))[-1]
    weights = newest / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    result = json.loads((sweep_dir / "trials" / victim["trial_id"] / "result.json").read_text())
    assert result["status"] == "completed" and result["attempts"] == 2 and result["pid"] != victim["pid"]
    assert result["resumed_from_step"] == int(newest.name.split("_")[1]) - 50  # the truncated one was skipped
    assert [c["step"] for c in result["checkpoints"]] == list(range(50, 401, 50))


def test_worker_node_removed_mid_sweep(tmp_path, tiny_model_dir, private_cluster):
    """The second node dies while both nodes run trials: its trial is retried on the head, and every
    planned trial ends completed or failed with a reason."""
    config = sw.write_config(tmp_path, tiny_model_dir, samples=3, concurrent=2, steps=300, checkpoint_every=50)
    sweep_dir = tmp_path / "sweep"
    proc = sw.sweep(config, private_cluster)

    def both_busy() -> bool:
        running = [r for r in sw.results(sweep_dir) if r["status"] == "running" and r["checkpoints"]]
        return len({r["node_id"] for r in running}) == 2

    sw.wait_for(both_busy, proc)
    sw.remove_worker(private_cluster)
    output, _ = proc.communicate(timeout=800)
    finished = sw.results(sweep_dir)
    assert len(finished) == 3, output[-3000:]
    assert all(r["status"] == "completed" or r.get("failure_reason") for r in finished)
    assert sum(r["status"] == "completed" for r in finished) >= 2
    states = [t.state for t in sw.study(sweep_dir).trials]
    assert optuna.trial.TrialState.RUNNING not in states and len(states) == 3


def test_nan_loss_fails_the_trial_with_its_reason_and_the_sweep_goes_on(tmp_path, tiny_model_dir, cluster):
    import torch
    from safetensors.torch import load_file, save_file

    poisoned = tmp_path / "nan-model"
    poisoned.mkdir()
    for item in tiny_model_dir.iterdir():
        (poisoned / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(poisoned / "model.safetensors"))
    key = next(k for k in weights if "layers.1.mlp.down_proj" in k)
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, str(poisoned / "model.safetensors"), metadata={"format": "pt"})
    config = sw.write_config(tmp_path, poisoned, samples=2, concurrent=1)
    proc = sw.sweep(config, cluster)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, output[-3000:]  # the sweep ran to its end: no trial completed
    finished = sw.results(tmp_path / "sweep")
    assert len(finished) == 2
    assert all(r["status"] == "failed" and "non-finite loss" in r["failure_reason"] for r in finished)
    assert all(r["checkpoints"] == [] for r in finished)  # nothing trained, nothing saved
    states = [t.state for t in sw.study(tmp_path / "sweep").trials]
    assert states == [optuna.trial.TrialState.FAIL] * 2


def test_mlflow_server_lost_mid_sweep_then_restarted_and_synced(tmp_path, tiny_model_dir, cluster):
    from mlflow import MlflowClient

    port, store = sw.free_port(), tmp_path / "mlflow"
    server = sw.start_mlflow(store, port)
    uri = f"http://127.0.0.1:{port}"
    config = sw.write_config(tmp_path, tiny_model_dir, samples=3, concurrent=1, steps=40, checkpoint_every=20,
                             tracking={"uri": uri})
    sweep_dir = tmp_path / "sweep"
    proc = sw.sweep(config, cluster)
    sw.wait_for(lambda: any(r["status"] == "completed" for r in sw.results(sweep_dir)), proc)
    sw.stop_mlflow(server)  # the tracking server goes away mid-sweep
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert "peft-arena sync" in output  # the user is told how to catch up
    assert sum(r["status"] == "completed" for r in sw.results(sweep_dir)) == 3  # no result was lost

    server = sw.start_mlflow(store, port)  # same store, same port
    try:
        for _ in range(2):  # twice: the second adds nothing
            synced = subprocess_sync(sweep_dir)
            assert synced.returncode == 0, synced.stderr[-2000:]
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=100)
        kinds = sorted(r.data.tags.get("peft_arena.kind") for r in runs)
        assert kinds == ["base", "sweep", "trial", "trial", "trial"]
        trial_ids = [r.data.tags["peft_arena.trial_id"] for r in runs if r.data.tags.get("peft_arena.kind") == "trial"]
        assert len(set(trial_ids)) == 3
        for run in runs:  # streamed live until the outage, filled by sync: every step once
            if run.data.tags.get("peft_arena.kind") == "trial":
                assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 41))
        parent = next(r for r in runs if r.data.tags.get("peft_arena.kind") == "sweep")
        assert parent.info.status == "FINISHED" and parent.data.metrics["trials.completed"] == 3  # ended by sync
    finally:
        sw.stop_mlflow(server)


def subprocess_sync(sweep_dir):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "sync", str(sweep_dir)], capture_output=True,
                          text=True, timeout=300)


def test_disk_full_on_checkpoint_write_fails_the_trial_and_leaves_no_corrupt_checkpoint(tmp_path, tiny_model_dir,
                                                                                         isolated_cache):
    """A 160 KiB tmpfs as the trial dir: the result fits, a full-finetuning checkpoint does not."""
    import subprocess

    from orchestrator import config as config_module
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import checkpoints, trial
    from tests.helpers import tiny_config

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the disk-full fault is not exercised")
    try:
        cfg = config_module.validate(tiny_config(tiny_model_dir, mount / "sweep", steps=4, checkpoint_every=2))
        trial_dir = SweepDir.of(cfg).trial("full")
        result = trial.run(cfg, "full", {}, trial_dir)
        assert result["status"] == "failed" and "No space left on device" in result["failure_reason"]
        recorded = json.loads((trial_dir.root / "result.json").read_text())
        assert recorded["status"] == "failed"  # the outcome itself was still recorded
        assert not list(trial_dir.root.rglob("*.tmp"))  # no half-written file left behind
        for directory in trial_dir.checkpoint_dirs():
            if (directory / checkpoints.META_FILE).exists():
                checkpoints.load(directory)  # whatever claims to be a checkpoint verifies
    finally:
        subprocess.run(["umount", str(mount)])

