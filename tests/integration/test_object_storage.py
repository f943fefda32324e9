"""Sweeps without a shared filesystem: the sweep dir on a real S3-compatible server (moto, on loopback),
trials on a real two-node Ray cluster, each trial working in a temp dir of its own that nothing else
sees. Everything a user reads afterwards (analyze, report, rewind) comes from the bucket, through a fresh
cache; a store that goes away mid-sweep only delays uploads; a killed driver resumes from the bucket."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import warnings

import pytest
import yaml

from tests import sweeps as sw

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
PREFIX = "sweeps/tiny"
URI = f"s3://test-bucket/{PREFIX}"


def _config(tmp_path, model_dir, output_dir: str, **sections):
    """Four configurations (LoRA and OFT at two budgets), each run once by the grid: the same trials in
    any order, so two sweeps can be compared configuration by configuration."""
    path = sw.write_config(tmp_path, model_dir, samples=4, concurrent=2, **sections)
    cfg = yaml.safe_load(path.read_text())
    cfg["output_dir"] = output_dir
    cfg["search"]["sampler"] = "grid"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _bucket_results(s3) -> dict[str, dict]:
    return {key.split("/")[-2]: json.loads(body) for key, body in s3.objects(f"{PREFIX}/trials/").items()
            if key.endswith("/result.json")}


def _by_configuration(results) -> dict[tuple, dict]:
    return {(r["method"], json.dumps(r["setting"], sort_keys=True)): r["final"] for r in results}


def test_a_sweep_on_s3_across_two_nodes_survives_an_outage_and_reads_back_from_the_bucket(
        tmp_path, tiny_model_dir, s3_cluster, s3, monkeypatch):
    from orchestrator.storage.bucket import mirror_for

    config = _config(tmp_path, tiny_model_dir, URI, tracking={"enabled": True, "live_every_s": 0})
    proc = sw.sweep(config, s3_cluster)

    def a_trial_has_uploaded_a_checkpoint() -> bool:
        return any(r["checkpoints"] for r in _bucket_results(s3).values())

    sw.wait_for(a_trial_has_uploaded_a_checkpoint, proc)
    retries = sw.worker_logs(s3_cluster).count("retrying for up to")  # the shared cluster's earlier tests' too
    s3.relay.cut()  # the store goes away while trials train, score and upload
    sw.wait_for(lambda: sw.worker_logs(s3_cluster).count("retrying for up to") > retries, proc,
                what="a trial meeting the outage and saying it retries")
    s3.relay.restore()
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]  # ... and the trials waited it out
    assert URI in output  # the table says where the results are: in the bucket

    # every trial's result is in the bucket, complete, with checkpoints that verify
    found = _bucket_results(s3)
    assert len(found) == 4 and all(r["status"] == "completed" for r in found.values())
    assert len({r["node_id"] for r in found.values()}) == 2, "trials ran on one node only"
    objects = s3.objects(PREFIX)
    for trial_id, result in found.items():
        assert [c["step"] for c in result["checkpoints"]] == [2, 4]
        for point in result["checkpoints"]:
            folder = f"{PREFIX}/trials/{trial_id}/checkpoints/step_{point['step']:06d}"
            meta = json.loads(objects[f"{folder}/checkpoint.json"])
            assert hashlib.sha256(objects[f"{folder}/adapter.safetensors"]).hexdigest() == meta["sha256"]
        # each trial worked in a temp dir of its own, removed once everything was uploaded
        assert "peft-arena-trial-" in result["trial_dir"] and not os.path.exists(result["trial_dir"])
    assert any(k.startswith(f"{PREFIX}/ray/tiny/experiment_state") for k in objects)  # Tune's state too
    for name in ("sweep_config.json", "summary.json", "optuna.db", "mlflow.db"):
        assert f"{PREFIX}/{name}" in objects
    artifacts = [k for k in objects if k.startswith(f"{PREFIX}/mlartifacts/")]  # MLflow's artifact root
    assert sum(k.endswith("/artifacts/result.json") for k in artifacts) == 4
    assert sum(k.endswith("checkpoints/step_000004/adapter.safetensors") for k in artifacts) == 4
    # ... copied inside the bucket: the driver downloaded results, never a checkpoint
    driver_files = [p for p in mirror_for(URI).rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert driver_files and not [p for p in driver_files if p.suffix == ".safetensors"]

    # the same sweep on a local path gives the same scores, configuration by configuration
    local = _config(tmp_path, tiny_model_dir, str(tmp_path / "local"))
    reference = sw.sweep(local, s3_cluster)
    output, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, output[-3000:]
    assert _by_configuration(found.values()) == _by_configuration(sw.results(tmp_path / "local"))

    # a fresh machine's view: nothing cached, everything read from (and written back to) the bucket
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(tmp_path / "fresh-cache"))
    for command in (["analyze", URI], ["report", URI], ["rewind", URI, "--alphas", "0,0.5,1", "--path", "interp"],
                    ["sync", URI]):
        done = sw.cli(*command)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    objects = s3.objects(PREFIX)
    assert json.loads(objects[f"{PREFIX}/analysis/pareto.json"])["front"]
    assert b"PEFT-Arena sweep tiny" in objects[f"{PREFIX}/report.html"]
    assert "synced 4 trial results of tiny" in done.stdout
    rewound = json.loads(objects[f"{PREFIX}/analysis/rewind.json"])
    assert rewound["trials"]
    for record in rewound["trials"]:
        assert f"{PREFIX}/trials/{record['trial_id']}/rewind.json" in objects
        assert any(k.startswith(f"{PREFIX}/trials/{record['trial_id']}/rewound/") and k.endswith("adapter.safetensors")
                   for k in objects)


def test_a_killed_driver_resumes_from_the_bucket(tmp_path, tiny_model_dir, s3_cluster, s3):
    from orchestrator.storage.bucket import mirror_for

    config = _config(tmp_path, tiny_model_dir, URI, steps=8, checkpoint_every=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["search"]["max_concurrent_trials"] = 1
    config.write_text(yaml.safe_dump(cfg))
    proc = sw.sweep(config, s3_cluster, start_new_session=True)

    def one_done_and_one_half_way() -> bool:
        """Half way: checkpoints in the bucket and steps still to train, so the kill cannot come after the
        trial's end (step 8), which would leave nothing to resume."""
        found = _bucket_results(s3).values()
        return any(r["status"] == "completed" for r in found) and \
            any(r["status"] == "running" and 0 < len(r["checkpoints"]) <= 2 for r in found)

    sw.wait_for(one_done_and_one_half_way, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, mid-sweep
    for running in [r for r in _bucket_results(s3).values() if r["status"] == "running"]:
        try:  # and the trial in flight on the cluster, which would otherwise outlive its driver a while
            os.kill(running["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    before = {t: r for t, r in _bucket_results(s3).items() if r["status"] == "completed"}
    assert 0 < len(before) < 4
    # the driver keeps its databases; every result and checkpoint must come back from the bucket
    shutil.rmtree(mirror_for(URI) / "trials", ignore_errors=True)
    assert sorted(p.name for p in mirror_for(URI).iterdir() if not p.name.startswith(".")) == \
        ["optuna.db", "sweep_config.json"]
    resumed = sw.sweep(config, s3_cluster, "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-3000:]
    after = _bucket_results(s3)
    completed = {t for t, r in after.items() if r["status"] == "completed"}
    assert len(completed) == 4 and set(before) <= completed
    assert len(_by_configuration(after[t] for t in completed)) == 4  # every configuration once, none twice
    for trial_id, result in before.items():  # finished trials were not run again
        assert after[trial_id]["started_at"] == result["started_at"]
    # the trial killed half way continued from the checkpoints it had uploaded, exactly
    assert [r.get("resumed") for r in after.values() if r.get("resumed")] == ["exact"], \
        {t: (r["status"], r.get("resumed"), r.get("continues"), r.get("failure_reason"), r.get("pid"), r.get("host"))
         for t, r in after.items()}


# ------------------------------------------------------------------------------ the mirror, file by file


def _trial_files(mirror):
    folder = mirror / "trials" / "t1" / "checkpoints" / "step_000002"
    folder.mkdir(parents=True)
    (folder / "adapter.safetensors").write_bytes(b"w" * 5000)
    (folder / "checkpoint.json").write_text('{"sha256": "x"}')
    (mirror / "trials" / "t1" / "result.json").write_text('{"status": "running"}')


def test_push_and_pull_move_only_what_changed(tmp_path, s3):
    from orchestrator.storage.bucket import Store

    first = Store(f"{URI}/ledger", tmp_path / "first")
    _trial_files(first.mirror)
    assert first.push() == 3 and first.push() == 0  # the second push finds nothing new
    second = first.elsewhere(tmp_path / "second")
    assert second.pull() == 3
    assert (second.mirror / "trials/t1/checkpoints/step_000002/adapter.safetensors").read_bytes() == b"w" * 5000
    # JSON files are rewritten in place, so they come down every time; weights only once
    assert second.pull() == 2
    assert second.push() == 0  # what came down is what the store holds: nothing goes back
    (second.mirror / "trials/t1/result.json").write_text('{"status": "completed"}')
    assert second.push() == 1
    assert s3.objects(f"{PREFIX}/ledger/trials/t1/result.json")[f"{PREFIX}/ledger/trials/t1/result.json"] == \
        b'{"status": "completed"}'
    assert second.pull(only=lambda name: name.endswith("result.json")) == 1


def test_uploads_wait_out_an_outage_and_give_up_with_the_reason_after_the_limit(tmp_path, s3, monkeypatch):
    from orchestrator.storage import bucket

    store = bucket.Store(f"{URI}/outage", tmp_path / "mirror")
    _trial_files(store.mirror)
    real_sleep = bucket.time.sleep

    def restore_once_waiting(seconds: float) -> None:
        """The store comes back while the upload waits between attempts (the point the product marks)."""
        s3.relay.restore()
        real_sleep(seconds)
    monkeypatch.setattr(bucket.time, "sleep", restore_once_waiting)
    s3.relay.cut()
    with pytest.warns(RuntimeWarning, match="retrying for up to"):
        assert store.push() == 3  # blocked until the store came back, then everything went up
    assert len(s3.objects(f"{PREFIX}/outage/")) == 3
    monkeypatch.setattr(bucket.time, "sleep", real_sleep)

    monkeypatch.setattr(bucket, "RETRY_S", 2.0)
    (store.mirror / "trials/t1/result.json").write_text('{"status": "completed"}')
    s3.relay.cut()
    with warnings.catch_warnings():  # a slow first attempt may use up the 2 s before any warning
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(OSError, match="upload trials/t1/result.json still failing after"):
            store.push()
    s3.relay.restore()
    assert store.push() == 1  # not marked as uploaded: the next push sends it

