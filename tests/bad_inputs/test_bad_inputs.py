"""Every input mistake a user can make ends the command with exit code 2 and one line that names the
field (or option) and what is allowed - and nothing is written. Each case is a real command line."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import commands
from orchestrator.config import shipped_configs
from orchestrator.process import free_port

QUICK = yaml.safe_load(shipped_configs()["quick"].read_text())


def patched(**sections) -> dict:
    data = copy.deepcopy(QUICK)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


# (id, config dict or raw YAML text, extra argv, text the single error line must contain)
CONFIG_CASES = [
    ("malformed-yaml", "name: x\ntrain: [1, 2\n", [], "not valid YAML at line"),
    ("yaml-list", "- a\n- b\n", [], "must be a mapping"),
    ("python-tag", "name: !!python/object/apply:os.system ['echo hi']\n", [], "not valid YAML"),
    ("unknown-section", patched(optimiser={"lr": 1}), [], "optimiser: unknown key"),
    ("unknown-nested-key", patched(train={"stpes": 3}), [], "train.stpes: unknown key"),
    ("task-path-missing", patched(train={"task": "mine/capitals.yaml"}), [],
     "train.task: 'mine/capitals.yaml' does not exist (relative to {config})"),
    ("suite-path-missing-absolute", patched(eval={"target_suite": ["/nowhere/capitals.yaml"]}), [],
     "eval.target_suite: '/nowhere/capitals.yaml' does not exist"),
    ("output-dir-is-a-file", patched(), ["--set", f"output_dir={__file__}/out"],
     "is a file; allowed: a directory to create or reuse"),
    ("set-task-path-missing", patched(), ["--set", "eval.retention_suite=[mine.yaml]"],
     "eval.retention_suite: 'mine.yaml' does not exist (relative to the current directory)"),
    ("steps-wrong-type", patched(train={"steps": "ten"}), [], "train.steps"),
    ("steps-negative", patched(train={"steps": -5}), [], "train.steps"),
    ("steps-zero", patched(train={"steps": 0}), [], "train.steps"),
    ("batch-zero", patched(train={"batch_size": 0}), [], "train.batch_size"),
    ("lr-zero", patched(train={"lr": 0}), [], "train.lr"),
    ("lr-too-big", patched(train={"lr": 3.0}), [], "train.lr"),
    ("warmup-too-big", patched(train={"warmup_ratio": 1.5}), [], "train.warmup_ratio"),
    ("zero-stage", patched(train={"zero_stage": 4}), [], "train.zero_stage"),
    ("checkpoint-every-zero", patched(train={"checkpoint_every": 0}), [], "train.checkpoint_every"),
    ("dtype", patched(model={"dtype": "float8"}), [], "model.dtype"),
    ("unknown-task", patched(train={"task": "poetry"}), [], "train.task"),
    ("one-beta", patched(train={"betas": [0.9]}), [], "train.betas: List should have at least 2 items"),
    ("unknown-overlong", patched(train={"overlong": "cut"}), [], "train.overlong = 'cut': Input should be 'truncate' or 'drop'"),
    ("unknown-schedule", patched(train={"schedule": "linear"}), [], "train.schedule = 'linear'"),
    ("unknown-retention-suite", patched(eval={"retention_suite": "everything"}), [], "retention_suite"),
    ("empty-suite-list", patched(eval={"retention_suite": []}), [], "empty list of tasks"),
    ("eval-split", patched(eval={"split": "train"}), [], "eval.split"),
    ("eval-mode", patched(eval={"mode": "async"}), [], "eval.mode"),
    ("eval-pool-size-zero", patched(eval={"mode": "pool", "pool_size": 0}), [], "eval.pool_size"),
    ("eval-pool-with-early-stop", patched(eval={"mode": "pool"}, search={"early_stop": {"kind": "hv"}}), [],
     "eval.mode: pool does not go with search.early_stop.kind 'hv'"),
    ("eval-pool-on-object-storage", patched(eval={"mode": "pool"}, output_dir="s3://bucket/runs/{name}"), [],
     "eval.mode: pool needs an output_dir every node reads"),
    ("cpus-per-trial", patched(resources={"cpus_per_trial": 2}), [], "resources.cpus_per_trial: unknown key"),
    ("workers-zero", patched(resources={"workers_per_trial": 0}), [], "resources.workers_per_trial"),
    ("workers-with-early-stop", patched(resources={"workers_per_trial": 2}, search={"early_stop": {"kind": "hv"}}), [],
     "resources.workers_per_trial 2 does not go with search.early_stop.kind 'hv'"),
    ("workers-on-object-storage", patched(resources={"workers_per_trial": 2}, output_dir="s3://bucket/runs/{name}"),
     [], "resources.workers_per_trial 2 needs an output_dir every node reads"),
    ("method-zero-stage", patched(methods=[{"name": "lora", "zero_stage": 5}]), [], "methods.0.zero_stage"),
    ("unknown-method", patched(methods=[{"name": "lorax"}]), [], "unknown method 'lorax'"),
    ("unknown-method-shorthand", patched(methods=["lora", "some-typo"]), [], "unknown method 'some-typo'; allowed: "),
    ("output-dir-unknown-scheme", patched(output_dir="ftp://host/runs/{name}"), [], "scheme ftp:// is not supported"),
    ("output-dir-no-bucket", patched(output_dir="s3:///runs/{name}"), [], "names no bucket"),
    ("empty-methods", patched(methods=[]), [], "methods"),
    ("unknown-setting-key", patched(methods=[{"name": "lora", "settings": [{"rank": 8}]}]), [], "unknown key 'rank'"),
    ("setting-wrong-type", patched(methods=[{"name": "lora", "settings": [{"r": "big"}]}]), [], "setting.r"),
    ("setting-negative", patched(methods=[{"name": "oft", "settings": [{"block_size": -4}]}]), [], "setting.block_size"),
    ("budget-negative", patched(search={"budgets": [-1e6]}), [], "search.budgets"),
    ("budget-zero", patched(search={"budgets": [0]}), [], "search.budgets"),
    ("budget-unreachable", patched(search={"budgets": [1e12]}), [], "out of reach"),
    ("objective-direction", patched(search={"objectives": [{"name": "target_gain", "mode": "up"}]}), [], "mode"),
    ("objective-unknown", patched(search={"objectives": [{"name": "beauty", "mode": "max"}]}), [], "name"),
    ("objective-twice", patched(search={"objectives": [{"name": "forgetting", "mode": "min"}] * 2}), [], "twice"),
    ("objectives-empty", patched(search={"objectives": []}), [], "objectives"),
    ("sampler", patched(search={"sampler": "bayes"}), [], "search.sampler"),
    ("num-samples-zero", patched(search={"num_samples": 0}), [], "search.num_samples"),
    ("concurrency-zero", patched(search={"max_concurrent_trials": 0}), [], "max_concurrent_trials"),
    ("lr-range-reversed", patched(search={"lr": {"low": 1e-2, "high": 1e-4}}), [], "above high"),
    ("grid-with-range", patched(search={"sampler": "grid", "lr": {"low": 1e-4, "high": 1e-2}}), [], "cannot be enumerated"),
    ("knob-unknown-method", patched(search={"knobs": {"loraa": {"r": [4]}}}), [], "unknown method"),
    ("knob-method-not-searched", patched(search={"knobs": {"dora": {"r": [4]}}}), [], "not in methods"),
    ("knob-empty-choices", patched(search={"knobs": {"lora": {"lora_alpha": []}}}), [], "empty list"),
    ("ray-address", patched(ray={"address": "my cluster"}), [], "ray.address"),
    ("tracking-file-store", patched(tracking={"uri": "file:///tmp/mlruns"}), [], "tracking.uri"),
    ("cpus-zero", patched(resources={"cpus_per_worker": 0}), [], "resources.cpus_per_worker"),
    ("max-failures-negative", patched(failure={"max_failures": -1}), [], "failure.max_failures"),
    ("name-with-spaces", patched(name="my sweep"), [], "name"),
    ("override-without-equals", patched(), ["--set", "train.steps"], "--set"),
    ("override-into-a-value", patched(), ["--set", "train.steps.x=3"], "is not a section"),
]


@pytest.mark.parametrize("case_id,config,extra,expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_mistakes(tmp_path, capsys, case_id, config, extra, expected):
    path = tmp_path / "config.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    keep_output_dir = isinstance(config, dict) and "://" in config.get("output_dir", "")
    argv = ["sweep", str(path), "--dry-run", *([] if keep_output_dir else ["--set", f"output_dir={tmp_path}/out"]),
            *extra]
    assert commands.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    expected = expected.format(config=path)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


def _task_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


_GENERATION = "name: t\nsource: {kind: jsonl, path: x.jsonl}\nscorer: generate_exact_match\nmetric: exact_match\n"
TASK_CASES = [
    ("task-missing-scorer", "name: t\nsource: {kind: jsonl, path: x.jsonl}\nmetric: acc\n", "missing field 'scorer'"),
    ("task-unknown-scorer", "name: t\nsource: {kind: jsonl, path: x.jsonl}\nscorer: bleu\nmetric: acc\n", "unknown scorer"),
    ("task-metric-mismatch", "name: t\nsource: {kind: jsonl, path: x.jsonl}\nscorer: text_nll\nmetric: acc\n", "not produced by"),
    ("task-unknown-source", "name: t\nsource: {kind: s3, path: x}\nscorer: text_nll\nmetric: token_prob\n", "source.kind"),
    ("task-bad-yaml", "name: [t\n", "not valid YAML"),
    ("task-unknown-field", "name: t\nsource: {kind: jsonl, path: x.jsonl}\nscorer: text_nll\nmetric: token_prob\ncode: x\n", "unknown field"),
    ("task-unknown-match", f"{_GENERATION}match: fuzzy\n", "task t.match: unknown rule 'fuzzy'; allowed: auto, final_number"),
    ("task-stop-not-text", f"{_GENERATION}stop: [1]\n", "task t.stop: [1]; allowed: a list of non-empty strings"),
    ("task-stop-empty", f"{_GENERATION}stop: ['']\n", "task t.stop"),
    ("task-zero-samples", f"{_GENERATION}samples: 0\n", "task t.samples: 0; allowed: an integer >= 1"),
    ("task-greedy-samples", f"{_GENERATION}samples: 16\n", "task t.samples: 16 greedy replies would be identical"),
    ("task-negative-temperature", f"{_GENERATION}temperature: -1\n", "task t.temperature: -1; allowed: a number >= 0"),
    ("task-template-escapes-the-sandbox", f"{_GENERATION}prompt: '{{{{ question.__class__.__mro__ }}}}'\n",
     "task t.prompt: '{{ question.__class__.__mro__ }}' cannot render"),
    ("task-template-syntax", f"{_GENERATION}answer: '{{{{ answer '\n", "task t.answer: '{{ answer ' cannot render"),
    ("task-reference-and-aliases", f"{_GENERATION}reference: x\naliases: answers\n", "set reference or aliases, not both"),
]


@pytest.mark.parametrize("case_id,text,expected", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_task_file_mistakes(tmp_path, capsys, case_id, text, expected):
    task = _task_yaml(tmp_path, text)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(eval={"retention_suite": [task]})))
    assert commands.main(["sweep", str(config), "--dry-run", "--set", f"output_dir={tmp_path}/out"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_broken_data_rows_are_refused_with_their_line(tmp_path, capsys, tiny_model_dir):
    (tmp_path / "data.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    task = _task_yaml(tmp_path, "name: t\nsource: {kind: jsonl, path: data.jsonl}\nscorer: text_nll\nmetric: token_prob\n")
    assert commands.main(["eval", "--model", str(tiny_model_dir), "--suite", task]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: source.path") and "data.jsonl:2" in line


MODEL_CASES = [
    ("missing-model-path", lambda d: str(d / "nowhere"), "no such dir"),
    ("model-is-a-file", lambda d: str(_touch(d / "weights.bin")), "is a file"),
    ("model-dir-without-config", lambda d: str(_mkdir(d / "empty")), "no config.json"),
    ("model-dir-without-weights", lambda d: str(_with_config(d / "noweights")), "has no weights"),
    ("model-dir-pickle-only", lambda d: str(_with_config(d / "pickled", "pytorch_model.bin")), "trust_pickle"),
]


def _touch(path: Path) -> Path:
    path.write_bytes(b"\0")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _with_config(path: Path, weights: str | None = None) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if weights:
        (path / weights).write_bytes(b"\0")
    return path


@pytest.mark.parametrize("case_id,make,expected", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_path_mistakes(tmp_path, capsys, case_id, make, expected):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched()))
    model = make(tmp_path)
    argv = ["run", str(config), "--method", "lora", "--set", f"model.name={model}", "--set", f"output_dir={tmp_path}/out"]
    assert commands.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.name") and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_unreachable_ray_address_fails_fast_and_records_nothing(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(tracking={"enabled": False})))
    argv = ["sweep", str(config), "--address", f"127.0.0.1:{free_port()}", "--set", f"output_dir={tmp_path}/out"]
    assert commands.main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ray.address") and "nothing answers" in line
    assert not (tmp_path / "out" / "sweep_config.json").exists()  # a retry is not told to --resume


@pytest.mark.slow
def test_an_evaluation_pool_the_cluster_cannot_place_is_one_line_not_a_hang(tmp_path, capsys, monkeypatch):
    import ray

    from orchestrator.trials import scoring

    monkeypatch.setattr(scoring, "SERVICE_START_S", 20)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(tracking={"enabled": False}, ray={"num_cpus": 2},
                                             eval={"mode": "pool", "cpus_per_actor": 64})))
    try:
        assert commands.main(["sweep", str(config), "--set", f"output_dir={tmp_path}/out"]) == 2
    finally:
        ray.shutdown()
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith("error: eval.pool_size: 1 actor(s) x 64 CPU / 0 GPU did not start "
                                                "within 20 s on a cluster of 2 CPU"), line
    assert not list((tmp_path / "out").glob("trials/*/result.json"))  # no trial ran


@pytest.mark.parametrize("resources, expected", [
    ({"workers_per_trial": 3, "cpus_per_worker": 1},
     "error: resources.workers_per_trial = 3: a trial needs 3 CPUs, the cluster has 2"),
    ({"cpus_per_worker": 4}, "error: resources.cpus_per_worker = 4: no node has that many CPUs (largest: 2)"),
    ({"workers_per_trial": 2, "gpus_per_worker": 1}, "error: resources.gpus_per_worker = 1: no node has that many GPUs"),
])
@pytest.mark.slow
def test_a_trial_the_cluster_can_never_place_is_refused_before_anything_is_written(tmp_path, capsys, resources, expected):
    import ray

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(tracking={"enabled": False}, ray={"num_cpus": 2}, resources=resources)))
    try:
        assert commands.main(["sweep", str(config), "--set", f"output_dir={tmp_path}/out"]) == 2
    finally:
        ray.shutdown()
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith(expected), line
    assert not (tmp_path / "out").exists()  # not even the config snapshot


def test_unreachable_mlflow_uri_fails_before_anything_starts(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(tracking={"uri": f"http://127.0.0.1:{free_port()}"})))
    assert commands.main(["sweep", str(config), "--set", f"output_dir={tmp_path}/out"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: tracking.uri")


OTHER_CASES = [
    ("resume-nothing", ["sweep", "{config}", "--resume"], "holds no sweep to resume"),
    ("analyze-without-target", ["analyze"], "give a SWEEP_DIR or --published"),
    ("analyze-not-a-sweep", ["analyze", "{tmp}"], "holds no sweep_config.json"),
    ("published-unknown-column", ["analyze", "--published", "gpt2/poetry"], "is not in the table"),
    ("budget-negative", ["budget", "--budget", "-5"], "--budget"),
    ("budget-unknown-model", ["budget", "--model", "nope", "--budget", "1e6"], "--model"),
    ("budget-unknown-method", ["budget", "--budget", "1e6", "--method", "lorax"], "unknown method"),
    ("run-unknown-method", ["run", "{config}", "--method", "nonexistent"], "unknown method"),
    ("run-bad-setting", ["run", "{config}", "--method", "lora", "--setting", "r"], "--setting"),
    ("run-output-dir-a-file", ["run", "{config}", "--method", "lora", "--set", "output_dir={config}"],
     "is a file; allowed: a directory to create or reuse"),
    ("rewind-not-a-sweep", ["rewind", "{tmp}"], "holds no sweep_config.json"),
    ("rewind-bad-alphas", ["rewind", "{tmp}", "--alphas", "0:1"], "--alphas = '0:1': allowed: START:STOP:STEP"),
    ("rewind-alpha-beyond-one", ["rewind", "{tmp}", "--alphas", "0,1.5"], "every alpha in [0, 1]"),
    ("rewind-negative-tau", ["rewind", "{tmp}", "--tau", "-0.1"], "--tau = -0.1: Input should be greater than"),
    ("missing-config-file", ["sweep", "{tmp}/nope.yaml"], "does not exist"),
    ("unknown-shipped-config", ["sweep", "quik", "--dry-run"], "or a shipped config (claims, paper-llama"),
    ("eval-unknown-suite", ["eval", "--model", "{model}", "--suite", "nope"], "unknown suite"),
]


@pytest.mark.parametrize("case_id,argv,expected", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_command_line_mistakes(tmp_path, capsys, tiny_model_dir, case_id, argv, expected):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(output_dir=str(tmp_path / "out"))))
    argv = [a.format(config=config, tmp=tmp_path, model=tiny_model_dir) for a in argv]
    assert commands.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_resuming_a_sweep_dir_of_another_config_is_refused(tmp_path, capsys):
    from orchestrator import config as config_module
    from orchestrator.storage.sweep_dir import SweepDir

    first = config_module.validate(patched(output_dir=str(tmp_path / "out")))
    SweepDir.of(first).claim(first, resume=False)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(patched(output_dir=str(tmp_path / "out"), train={"lr": 5e-4})))
    assert commands.main(["sweep", str(other), "--resume"]) == 2
    assert "belongs to another config" in capsys.readouterr().err


def test_a_result_written_by_a_newer_version_is_refused_in_one_line_and_left_as_it_is(tmp_path, capsys):
    from orchestrator import config as config_module
    from orchestrator.storage.sweep_dir import SCHEMA_VERSION, SweepDir

    cfg = config_module.validate(patched(output_dir=str(tmp_path / "out")))
    where = SweepDir.of(cfg)
    where.claim(cfg, resume=False)
    trial_dir = where.trial("t")
    trial_dir.write_result({"schema": SCHEMA_VERSION + 1, "trial_id": "t", "status": "completed"})
    written = trial_dir.result_path.read_bytes()
    assert commands.main(["analyze", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"schema = {SCHEMA_VERSION + 1}" in lines[0], lines
    assert trial_dir.result_path.read_bytes() == written


def test_a_config_that_is_not_utf8_text_is_one_line(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"name: caf\xe9\nmethods: [lora]\n")  # Latin-1, as an old editor might save it
    assert commands.main(["sweep", str(path), "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is not UTF-8 text" in lines[0], lines


def test_init_refuses_to_overwrite_and_names_the_shipped_configs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert commands.main(["init", "mine"]) == 0
    assert commands.main(["init", "mine"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert commands.main(["init", "other", "--from", "nope"]) == 2
    assert "allowed: claims, paper-llama-3.2-3b-sft" in capsys.readouterr().err
    assert not (tmp_path / "other.yaml").exists()


@pytest.mark.slow
def test_export_mistakes_are_one_line_and_write_nothing(tmp_path, capsys, tiny_model_dir, isolated_cache):
    from orchestrator import config as config_module
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import trial
    from tests.helpers import tiny_config

    cfg = config_module.validate(tiny_config(tiny_model_dir, tmp_path / "sweep", steps=4, checkpoint_every=2))
    where = SweepDir.of(cfg)
    where.claim(cfg, resume=False)
    assert trial.run(cfg, "lora", {"r": 2}, where.trial("t"))["status"] == "completed"
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    capsys.readouterr()  # the trial's own output
    cases = [
        (["t", "--step", "3"], "--step: 3 is not a checkpoint of trial t; allowed: 2, 4"),
        (["nope"], "unknown trial 'nope'; allowed: t"),
        (["t", "--rewound"], "has no rewound point"),
        (["t", "--step", "2", "--rewound"], "one of them"),
        (["t", "--front"], "exactly one of them"),
    ]
    for extra, expected in cases:
        assert commands.main(["export", str(where.root), *extra, "--to", str(out)]) == 2, extra
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (extra, lines)
    assert commands.main(["export", str(where.root), "t", "--to", str(occupied)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    weights = where.trial("t").checkpoint(4) / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a corrupt last checkpoint
    assert commands.main(["export", str(where.root), "t", "--to", str(out)]) == 2
    assert "does not match its recorded sha256" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert commands.main(["export", str(where.root), "t", "--step", "2", "--to", str(out)]) == 0  # the good one still exports
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()


# object storage: each mistake found before anything runs, with --dry-run too (a real S3 server on loopback)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_missing_bucket_is_one_line(tmp_path, capsys, s3, dry_run):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(output_dir=f"s3://no-such-bucket/{dry_run}/{{name}}")))
    assert commands.main(["sweep", str(config), *(["--dry-run"] if dry_run else [])]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "bucket 'no-such-bucket' does not exist" in lines[0], lines
    assert s3.objects() == {}


def test_missing_credentials_are_one_line(tmp_path, capsys, s3, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(output_dir="s3://test-bucket/no-credentials/{name}")))
    assert commands.main(["sweep", str(config), "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no S3 credentials found" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0], lines


def test_an_unreachable_store_is_one_line(tmp_path, capsys, s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(patched(output_dir="s3://test-bucket/unreachable/{name}")))
    assert commands.main(["sweep", str(config), "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the store does not answer" in lines[0], lines


def test_a_remote_path_without_a_sweep_is_one_line(capsys, s3):
    assert commands.main(["analyze", "s3://test-bucket/nothing-here"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "holds no sweep_config.json" in lines[0], lines
