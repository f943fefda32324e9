"""MLflow tracking against a real `mlflow server` on 127.0.0.1: one parent run per sweep, nested trial
runs with per-step metrics, downloadable checkpoints that rebuild the trained model, an idempotent
`peft-arena sync`, and the UI itself in headless Chromium."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.process import free_port
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.tracking import mlflow_runs, server
from orchestrator.trials import checkpoints
from tests.browser import Chromium, chromium, skip_without
from tests.helpers import tiny_config, wait_until
from tests.sweeps import start_mlflow, stop_mlflow

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


@pytest.fixture()
def mlflow_server(tmp_path):
    port = free_port()
    proc = start_mlflow(tmp_path / "server", port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow(proc)


def test_the_tracking_server_starts_no_job_runner(tmp_path):
    """MLflow's server would start a GenAI job runner (huey consumers) beside itself: 11 processes instead
    of 3 on a laptop that also trains. A sweep's server runs without it."""
    import psutil

    proc = start_mlflow(tmp_path / "server", free_port())
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert not [p.cmdline() for p in tree if "huey" in " ".join(p.cmdline())]
        assert len(tree) <= 3, [p.cmdline() for p in tree]
    finally:
        stop_mlflow(proc)


def _sweep_config(tmp_path: Path, model_dir: Path, uri: str, samples: int = 2) -> Path:
    cfg = tiny_config(model_dir, tmp_path / "sweep", steps=4, checkpoint_every=2)
    cfg["methods"] = [{"name": "lora", "settings": [{"r": 2}, {"r": 4}]}]
    cfg["search"] = {"sampler": "grid", "num_samples": samples}
    cfg["resources"] = {"cpus_per_worker": 1}
    cfg["ray"] = {"address": "local", "num_cpus": 2}
    cfg["tracking"] = {"uri": uri}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _runs(client, experiment_id: str) -> list:
    return client.search_runs([experiment_id], max_results=1000)


@pytest.mark.slow
def test_sweep_is_tracked_in_a_real_mlflow_server(tmp_path, tiny_model_dir, mlflow_server, isolated_cache):
    from mlflow import MlflowClient

    config = _sweep_config(tmp_path, tiny_model_dir, mlflow_server)
    done = _cli("sweep", str(config))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tiny")
    runs = _runs(client, experiment.experiment_id)
    kinds = [r.data.tags.get(mlflow_runs.TAG_KIND) for r in runs]
    assert kinds.count("sweep") == 1 and kinds.count("trial") == 2 and kinds.count("base") == 1
    parent = next(r for r in runs if r.data.tags[mlflow_runs.TAG_KIND] == "sweep")
    trials = [r for r in runs if r.data.tags[mlflow_runs.TAG_KIND] == "trial"]
    assert all(r.data.tags[mlflow_runs.PARENT] == parent.info.run_id for r in trials)
    assert {r.data.params["setting.r"] for r in trials} == {"2", "4"}
    assert all(r.info.status == "FINISHED" for r in trials)
    assert "sweep_config.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    # the sweep's run ends with the sweep and tells its story: outcomes, and the front's hypervolume per trial
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials.completed"] == 2 and parent.data.metrics["trials.failed"] == 0
    progress = _history(client, parent.info.run_id, "hypervolume")
    assert [step for step, _ in progress] == [1, 2] and progress[0][1] <= progress[1][1]

    run = trials[0]
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in sorted(loss, key=lambda m: m.step)] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "retention")] == [2, 4]
    assert {"gain", "forgetting", "target.arithmetic", "retention.mc_local", "final.gain"} <= set(run.data.metrics)
    for name in ("gain", "forgetting"):  # its 95% interval beside each estimate, per checkpoint
        assert [m.step for m in client.get_metric_history(run.info.run_id, f"{name}.ci_low")] == [2, 4]
        assert run.data.metrics[f"final.{name}.ci_low"] <= run.data.metrics[f"final.{name}"] + 1e-12
    recorded = json.loads((tmp_path / "sweep" / "trials" / run.data.tags[mlflow_runs.TAG_TRIAL] / "result.json").read_text())
    # the run spans the trial itself, not the moment it was synced
    assert run.info.start_time == int(recorded["started_at"] * 1000)
    assert run.info.end_time == int(recorded["ended_at"] * 1000)
    assert (run.info.end_time - run.info.start_time) / 1000 == pytest.approx(recorded["timings"]["total_s"], abs=1.0)

    # The checkpoint artifact rebuilds the trial's final model, output for output.
    local_dir = tmp_path / "download"
    downloaded = Path(client.download_artifacts(run.info.run_id, "checkpoints/step_000004", str(local_dir)))
    trial_dir = tmp_path / "sweep" / "trials" / run.data.tags[mlflow_runs.TAG_TRIAL]
    from_mlflow, tokenizer, _ = checkpoints.load_trained(downloaded)
    from_trial, _, _ = checkpoints.load_trained(trial_dir / "checkpoints" / "step_000004")
    ids = torch.tensor([tokenizer("Question: What is 3 + 4?\nAnswer:")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(from_mlflow(input_ids=ids).logits, from_trial(input_ids=ids).logits, atol=0, rtol=0)
    # every reply of the trial's scored points, as the trial filed them
    replies = Path(client.download_artifacts(run.info.run_id, "replies", str(local_dir)))
    assert sorted(p.name for p in replies.iterdir()) == ["base.jsonl.gz", "step_000002.jsonl.gz", "step_000004.jsonl.gz"]
    for path in replies.iterdir():
        assert path.read_bytes() == (trial_dir / "replies" / path.name).read_bytes()

    # a rewound point becomes a child of its trial's run
    rewound = _cli("rewind", str(tmp_path / "sweep"), "--trial", run.data.tags[mlflow_runs.TAG_TRIAL], "--alphas", "0,1")
    assert rewound.returncode == 0, rewound.stderr[-2000:]
    children = [r for r in _runs(client, experiment.experiment_id) if r.data.tags.get(mlflow_runs.TAG_KIND) == "rewind"]
    assert len(children) == 1 and children[0].data.tags[mlflow_runs.PARENT] == run.info.run_id
    assert {"validation.target", "test.target", "final.retention"} <= set(children[0].data.metrics)

    # the rewound point exported: recorded on the trial's run
    exported = _cli("export", str(tmp_path / "sweep"), run.data.tags[mlflow_runs.TAG_TRIAL], "--rewound", "--to",
                    str(tmp_path / "exported"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert client.get_run(run.info.run_id).data.tags["peft_arena.export"] == str(tmp_path / "exported")
    assert "rewound point" in (tmp_path / "exported" / "README.md").read_text()

    # sync, twice: the runs are already there, so nothing is added or replaced
    before = sorted(r.info.run_id for r in _runs(client, experiment.experiment_id))
    for _ in range(2):
        synced = _cli("sync", str(tmp_path / "sweep"))
        assert synced.returncode == 0, synced.stderr[-2000:]
    assert sorted(r.info.run_id for r in _runs(client, experiment.experiment_id)) == before

    with chromium() as browser:
        skip_without(browser)
        _check_ui_in_chromium(browser, mlflow_server, experiment.experiment_id, run)
        _check_trials_view_in_chromium(browser, mlflow_server, tmp_path / "sweep", trials)
        _check_study_dashboard_in_chromium(browser, tmp_path / "sweep")


def _check_ui_in_chromium(browser: Chromium, url: str, experiment_id: str, run) -> None:
    """The MLflow UI: the experiment's run table lists the sweep's parent run (trials nest under it), and a
    trial's own page shows it."""
    # The table draws a first frame before its runs arrive: the look waits for the count and the parent's row.
    loaded = """() => /\\b5\\s+matching runs/.test(document.body.innerText)
                     && document.body.innerText.includes('sweep tiny')"""
    runs_page = browser.look(f"{url}/#/experiments/{experiment_id}/runs", "mlflow-ui.png", ready="text=matching runs",
                             until=loaded)
    assert "Training runs" in runs_page and "sweep tiny" in runs_page
    assert re.search(r">5</strong> matching runs", runs_page)  # the parent, the base-model run, 2 trials, 1 rewound
    trial_page = browser.look(f"{url}/#/experiments/{experiment_id}/runs/{run.info.run_id}", "mlflow-ui-trial.png",
                              ready=f"text={run.info.run_name}")
    assert run.info.run_name in trial_page


def _check_trials_view_in_chromium(browser: Chromium, url: str, sweep_dir: Path, trials: list) -> None:
    """The view `peft-arena ui` opens: every trial a row of the "trial" group (not folded under the sweep's
    parent run), its first columns method, final gain and forgetting."""
    from orchestrator.storage.sweep_dir import SweepDir

    fragment = mlflow_runs.Tracker(SweepDir(sweep_dir).load_config()).share_trials_view()
    names = [r.info.run_name for r in trials]
    shown = f"""() => {{ const text = document.body.innerText;
        return text.includes('Group: trial') && {json.dumps(names)}.every(n => text.includes(n)); }}"""
    page = browser.look(f"{url}/{fragment}", "mlflow-ui-trials.png", ready="text=Group: trial", until=shown)
    text = browser.page.evaluate("document.body.innerText")
    first = ("method", "final.gain", "final.forgetting")  # the grid draws the columns that fit, in order
    assert all(f"\n{column}\n" in text for column in first), text[:2000]
    assert [text.index(f"\n{column}\n") for column in first] == sorted(text.index(f"\n{c}\n") for c in first)
    assert all(name in page for name in names)


def _check_study_dashboard_in_chromium(browser: Chromium, sweep_dir: Path) -> None:
    """`peft-arena ui --study`: optuna-dashboard on the sweep's study draws its Pareto front, with the
    objectives under their names."""
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", str(sweep_dir), "--study", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        studies: list[dict] = []

        def listed() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies.extend(json.loads(response.read())["study_summaries"])
                return True
            except OSError:
                return False
        wait_until(listed, "optuna-dashboard answering /api/studies", alive=proc, poll=0.5)
        assert [s["study_name"] for s in studies] == ["tiny"]
        page = browser.look(f"http://127.0.0.1:{port}/dashboard/studies/{studies[0]['study_id']}",
                            "optuna-dashboard.png", ready="text=Pareto Front")
        assert "Pareto Front" in page and "target_gain" in page and "forgetting" in page
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_unreachable_tracking_server_is_a_config_error(tmp_path, tiny_model_dir):
    config = _sweep_config(tmp_path, tiny_model_dir, f"http://127.0.0.1:{free_port()}")
    done = _cli("sweep", str(config))
    assert done.returncode == 2 and "error: tracking.uri" in done.stderr, done.stderr[-2000:]
    sweep_dir = tmp_path / "sweep"  # refused before any trial trained: nothing of the sweep was written
    assert not sweep_dir.exists() or SweepDir(sweep_dir).collect() == []


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_a_trial_streams_into_its_run_while_it_trains_and_a_server_outage_is_filled_by_sync(
        tmp_path, tiny_model_dir, isolated_cache):
    """Live: while the trial runs, the loss chart on its MLflow page (headless Chromium) gains a point per
    step between two looks. Outage: the server is stopped after step 3 and back after step 6; the trial goes
    on, and the driver's sync leaves every metric's history equal to the result JSON, point for point, none
    missing and none twice."""
    from mlflow import MlflowClient

    from orchestrator import config
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import trial

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_mlflow(tmp_path / "server", port)
    cfg = tiny_config(tiny_model_dir, tmp_path / "sweep", steps=8, checkpoint_every=2)
    cfg["tracking"] = {"uri": url, "live_every_s": 0, "system_metrics_every_s": 1}
    cfg = config.validate(cfg)
    mlflow_runs.Tracker(cfg)  # the driver's part: experiment and sweep run
    client = MlflowClient(url)
    live = mlflow_runs.LiveRun(cfg)
    seen: dict[int, int] = {}
    charted: dict[int, list[tuple[float, float]]] = {}
    losses: dict[int, float] = {}

    def on_step(step: int, record: dict[str, float]) -> None:
        nonlocal server
        live.log_step(step, record)
        losses[step] = record["loss"]
        if step <= 3:  # a look at the run through the REST API the UI reads, while the trial is in flight
            run = client.get_run(live.run_id)
            assert run.info.status == "RUNNING"
            seen[step] = len(client.get_metric_history(live.run_id, "loss"))
        if step in (2, 3) and browser:  # and at the trial's page itself, as a person watching it would
            page = f"{url}/#/experiments/{run.info.experiment_id}/runs/{live.run_id}/model-metrics"
            charted[step] = browser.metric_charts(page, f"mlflow-live-step{step}.png")["loss"]
        if step == 3:
            stop_mlflow(server)
        if step == 6:
            server = start_mlflow(tmp_path / "server", port)

    def on_scores(step: int, point: dict, params: dict) -> None:
        live.log_checkpoint(point)

    trial_dir = SweepDir.of(cfg).trial("live")
    try:
        with chromium(1400, 3200) as browser:  # tall: MLflow draws only the charts in view
            result = trial.run(cfg, "lora", {"r": 2}, trial_dir, on_start=live.start, on_step=on_step,
                               on_scores=on_scores)
        live.close()
        assert result["status"] == "completed", result.get("traceback")
        assert seen == {1: 1, 2: 2, 3: 3}
        if browser:
            assert charted == {n: [(s, pytest.approx(losses[s], rel=1e-6)) for s in range(1, n + 1)] for n in (2, 3)}
        assert live.tracker is None  # the outage turned live logging off for the rest of the trial
        run_id = mlflow_runs.Tracker(cfg).sync_trial(result)
        assert run_id == live.run_id  # the live run completed, not replaced
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("loss", "lr", "grad_norm"):
            assert _history(client, run_id, key) == [(r["step"], r[key]) for r in result["train_log"]]
        for key, field in (("gain", "gain"), ("forgetting", "forgetting")):
            assert _history(client, run_id, key) == [(c["step"], c[field]) for c in result["checkpoints"]]
        assert run.data.params["trainable_params"] == str(result["params"]["trainable"])  # known only after it started
        assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics)
        before = {key: _history(client, run_id, key) for key in run.data.metrics if not key.startswith("system/")}
        mlflow_runs.Tracker(cfg).sync_trial(result | {"note": "changed, so not skipped by its digest"})
        assert {key: _history(client, run_id, key) for key in before} == before  # a second sync adds nothing
    finally:
        stop_mlflow(server)
    skip_without(browser)


def test_a_ui_beyond_loopback_asks_for_a_login(tmp_path, tiny_model_dir):
    """Bound beyond loopback, the MLflow UI runs MLflow's basic-auth app: 401 without credentials, 200 with
    the admin password from the environment, which no file of the sweep dir holds. Without a password
    (or --insecure) it refuses to start: one line, exit 2."""
    import base64
    import urllib.error
    import urllib.request

    from orchestrator import config
    from orchestrator.storage.sweep_dir import SweepDir

    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep"))
    SweepDir.of(cfg).claim(cfg, resume=False)
    ui = [sys.executable, "-m", "orchestrator.cli", "ui", str(tmp_path / "sweep"), "--host", "0.0.0.0"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    refused = subprocess.run(ui, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert "--host = '0.0.0.0'" in refused.stderr and "MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr

    port, password = free_port(), "a-long-test-password-7f3e"
    proc = subprocess.Popen([*ui, "--port", str(port)], cwd=ROOT, env={**env, "MLFLOW_AUTH_ADMIN_PASSWORD": password},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
    try:
        server.wait_healthy(f"http://127.0.0.1:{port}", timeout=180)
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(url, timeout=10)
        assert anonymous.value.code == 401
        login = base64.b64encode(f"admin:{password}".encode()).decode()
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {login}"}),
                                    timeout=10) as response:
            assert response.status == 200 and "experiments" in json.loads(response.read())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    written = [p for p in (tmp_path / "sweep").rglob("*") if p.is_file() and p.suffix in (".ini", ".json", ".yaml")]
    assert written and not any(password in p.read_text() for p in written)


@pytest.mark.slow
def test_trials_on_two_nodes_stream_into_the_default_sqlite_store_beside_the_driver(tmp_path, tiny_model_dir, cluster):
    """The default store (SQLite in the sweep dir), two trials at once on a two-node cluster writing live
    while the driver syncs: no tracking warning, and each trial's run is FINISHED with every step once,
    logged while it trained."""
    from mlflow import MlflowClient

    from orchestrator.storage.sweep_dir import SweepDir
    from tests import sweeps as sw

    config = sw.write_config(tmp_path, tiny_model_dir, samples=3, concurrent=2, steps=6, checkpoint_every=3,
                             tracking={"live_every_s": 0})
    proc = sw.sweep(config, cluster)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert "warning: MLflow" not in output, output[-3000:]

    client = MlflowClient(SweepDir(tmp_path / "sweep").mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get(mlflow_runs.TAG_KIND) == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    for run in trials:
        loss = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in loss) == [1, 2, 3, 4, 5, 6]
        # logged while the trial trained (by its worker), not replayed by the driver after it ended
        assert max(m.timestamp for m in loss) <= run.info.end_time
    assert next(r for r in runs if r.data.tags.get(mlflow_runs.TAG_KIND) == "sweep").info.status == "FINISHED"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _processes_naming(port: int) -> list[str]:
    """Command lines of the live processes that name `port` (a UI server and its workers all do)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(str(port) in word for word in words[1:]):
            found.append(" ".join(words))
    return found


@pytest.mark.parametrize("study,stop", [(False, signal.SIGTERM), (True, signal.SIGINT)], ids=["mlflow-sigterm",
                                                                                               "study-sigint"])
def test_ui_prints_its_url_once_it_answers_and_a_signal_stops_every_process_it_started(
        tmp_path, tiny_model_dir, study, stop):
    """`peft-arena ui` (MLflow, or optuna-dashboard with --study): the URL line comes when the server answers,
    and SIGTERM or Ctrl-C (SIGINT) leaves no process of its group behind and its port free."""
    import urllib.request

    import optuna

    from orchestrator import config
    from orchestrator.sweep.space import make_sampler

    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep"))
    where = SweepDir.of(cfg)
    where.claim(cfg, resume=False)
    optuna.create_study(storage=where.optuna_url, study_name=cfg.name, directions=["maximize", "minimize"],
                        sampler=make_sampler("random", 0, 1))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", str(where.root), "--port", str(port),
                             *(["--study"] if study else [])], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = ""
        while "for sweep tiny" not in line:  # the line with the URL (the server may log lines of its own)
            line = proc.stdout.readline()
            assert line, "the UI ended before it printed its URL"
        assert f"http://127.0.0.1:{port}" in line, line
        assert _processes_naming(port), "the UI's server is not running"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{'/api/studies' if study else '/health'}",
                                    timeout=10) as response:
            assert response.status == 200
        os.kill(proc.pid, stop)
        assert proc.wait(timeout=60) == 128 + stop
        wait_until(lambda: _port_free(port), f"port {port} free once the UI stopped", poll=0.2)
        assert _processes_naming(port) == []  # the server and its workers went with it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
