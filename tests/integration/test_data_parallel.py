"""Data-parallel trials: W Ray Train workers (gloo on the CPU accelerator, real DeepSpeed engines) at
micro-batch b take the very steps one worker takes at micro-batch b with W x the accumulation, and score
their checkpoints together, each rank its share of the chunks, to the numbers one process gets."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from orchestrator.config import EvalConfig
from orchestrator.trials import checkpoints
from tests import helpers

pytestmark = pytest.mark.slow
STEPS = 8


def _pairs(tokenizer, n=16):
    qa = [(f"Question: What is {a} + {b}?\nAnswer:", f" {a + b}</s>") for a in range(4) for b in range(4)]
    return [(tokenizer(q, add_special_tokens=False)["input_ids"], tokenizer(x, add_special_tokens=False)["input_ids"])
            for q, x in qa[:n]]


ZERO_STAGES = (0, 2, 3)
# A generative task and two likelihood ones: three chunks, so two ranks score two and one of them.
EVAL = EvalConfig(target_suite="arithmetic", retention_suite=helpers.LOCAL_RETENTION, max_items=4, batch_size=8)


def _train_on_this_rank(config: dict) -> None:
    """One rank (in a Ray Train worker): the project's trainer on a tiny LoRA model, once per ZeRO stage in
    the same process group (a group start costs more than the 8 steps); rank 0 writes each stage's log."""
    from evals import suites
    from methods import registry
    from orchestrator.config import TrainConfig
    from orchestrator.storage.sweep_dir import TrialDir
    from orchestrator.trials import regimes, scoring, trainer

    tokenizer = helpers.build_tiny_tokenizer()
    rank = torch.distributed.get_rank()
    base = helpers.build_tiny_model(len(tokenizer))
    shared = scoring.evaluate(base, tokenizer, EVAL)  # every rank scores its share of the chunks
    if rank == 0:  # ... and gets what one process scoring every chunk gets
        alone = {kind: suites.evaluate_suite(base, tokenizer, kind, ref, EVAL.split, EVAL.max_items, EVAL.batch_size)
                 for kind, ref in EVAL.suite_refs().items()}
        (Path(config["out"]) / "base_scores.json").write_text(json.dumps({"shared": shared, "alone": alone}))
    for zero in ZERO_STAGES:
        model = registry.wrap(helpers.build_tiny_model(len(tokenizer)), "lora", {"r": 4}, "all-linear", seed=1)
        cfg = TrainConfig(steps=STEPS, batch_size=4, grad_accum=config["accum"], max_length=64, lr=2e-2,
                          warmup_ratio=0.25, checkpoint_every=STEPS, zero_stage=zero, threads=1)
        out = Path(config["out"]) / f"zero{zero}"
        scored: dict = {}
        result = trainer.train(model, regimes.SFT(_pairs(tokenizer), cfg, tokenizer.pad_token_id), cfg,
                               TrialDir(out), {"method": "lora"},
                               on_checkpoint=lambda step, directory: scored.update(scoring.evaluate(model, tokenizer, EVAL)))
        if rank == 0:
            (out / "log.json").write_text(json.dumps({"losses": [r["loss"] for r in result.log],
                                                      "tokens": result.tokens, "world_size": result.world_size,
                                                      "global_batch": result.global_batch, "scores": scored}))


Trained = dict[int | str, Any]  # per ZeRO stage: (its log, its final adapter state); "base_scores"


def _run(workers: int, accum: int, out: Path) -> Trained:
    """Each ZeRO stage's log and final adapter state, trained by one Ray Train group of `workers` ranks."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    TorchTrainer(_train_on_this_rank, train_loop_config={"accum": accum, "out": str(out)},
                 torch_config=TorchConfig(backend="gloo"),
                 scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
                 run_config=RunConfig(name=f"w{workers}", storage_path=str(out / "ray_train"))).fit()
    trained = {"base_scores": json.loads((out / "base_scores.json").read_text())}
    for zero in ZERO_STAGES:
        state, _ = checkpoints.load(out / f"zero{zero}" / "checkpoints" / f"step_{STEPS:06d}")
        trained[zero] = json.loads((out / f"zero{zero}" / "log.json").read_text()), state
    return trained


@pytest.fixture(scope="module")
def one_and_two_workers(tmp_path_factory) -> tuple[Trained, Trained]:
    """Two workers at accumulation 1 and one worker at accumulation 2, every ZeRO stage each; Ray is shut
    down again before the cluster tests of this file start theirs."""
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import tests/
    ray.cloudpickle.register_pickle_by_value(helpers)
    out = tmp_path_factory.mktemp("data_parallel")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        return _run(workers=2, accum=1, out=out / "two"), _run(workers=1, accum=2, out=out / "one")
    finally:
        ray.shutdown()


@pytest.mark.parametrize("zero", ZERO_STAGES)
def test_two_workers_equal_one_worker_with_double_accumulation(one_and_two_workers, zero):
    (two, two_state), (one, one_state) = (trained[zero] for trained in one_and_two_workers)
    assert (two["world_size"], two["global_batch"]) == (2, 8) and (one["world_size"], one["global_batch"]) == (1, 8)
    assert two["tokens"] == one["tokens"]  # the same examples, split over two ranks
    assert len(two["losses"]) == STEPS
    for a, b in zip(two["losses"], one["losses"]):
        assert abs(a - b) <= 1e-5 * abs(b), (two["losses"], one["losses"])
    assert two["losses"][-1] < 0.8 * two["losses"][0]  # it did learn
    assert two_state.keys() == one_state.keys()
    for name in one_state:
        torch.testing.assert_close(two_state[name], one_state[name], rtol=1e-5, atol=1e-6)
    # the checkpoint scored by both ranks together: the one-worker numbers on every likelihood task (the
    # weights agree to 1e-5; a greedy reply could flip on a near tie, so generated ones are not compared)
    for kind, task, scored in _likelihood_tasks(two["scores"]):
        assert scored["score"] == pytest.approx(one["scores"][kind]["tasks"][task]["score"], abs=1e-4), (kind, task)


def _likelihood_tasks(scores: dict) -> list[tuple[str, str, dict]]:
    """(kind, task, its scores) of the tasks scored by likelihood: float sums, which agree to rounding where
    the weights or thread counts differ a little (generated tasks carry `examples`)."""
    found = [(kind, task, scored) for kind in ("target", "retention")
             for task, scored in scores[kind]["tasks"].items() if "examples" not in scored]
    assert {task for _, task, _ in found} == {"arithmetic_nll", "text_local", "mc_local"}
    return found


def test_two_ranks_scoring_their_shares_give_what_one_process_scoring_everything_gives(one_and_two_workers):
    two, one = one_and_two_workers
    for trained in (two, one):
        scores = trained["base_scores"]
        assert scores["shared"] == scores["alone"]  # every per-item record and aggregate, exactly
        assert sorted(scores["shared"]["retention"]["tasks"]) == ["mc_local", "text_local"]


def _sweep_config(tmp_path: Path, model_dir: Path, **train) -> Path:
    import yaml

    cfg = helpers.tiny_config(model_dir, tmp_path / "sweep", **train)
    cfg["methods"] = [{"name": "lora", "settings": [{"r": 2}]},
                      {"name": "oft", "settings": [{"block_size": 4}], "zero_stage": 3}]
    cfg["search"] = {"sampler": "grid", "max_concurrent_trials": 1}
    cfg["resources"] = {"workers_per_trial": 2, "cpus_per_worker": 1}
    cfg["failure"] = {"max_failures": 2}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.timeout(1200)
def test_a_sweep_whose_trials_each_train_on_two_workers(tmp_path, tiny_model_dir, cluster):
    """Two trials, each a 2-rank DeepSpeed job under Ray Train on the two one-CPU nodes (LoRA under ZeRO-0,
    OFT under ZeRO-3): results, checkpoints, Optuna and MLflow as for one-worker trials, each result says
    where its ranks ran, and the scores both ranks recorded together are what one process scoring the saved
    checkpoint gets."""
    from mlflow import MlflowClient

    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import scoring
    from tests import sweeps as sw

    proc = sw.sweep(_sweep_config(tmp_path, tiny_model_dir), cluster)
    output, _ = proc.communicate(timeout=1100)
    assert proc.returncode == 0, output[-3000:]
    where = SweepDir(tmp_path / "sweep")
    results = where.collect()
    assert sorted(r["method"] for r in results) == ["lora", "oft"]
    for result in results:
        assert result["status"] == "completed" and result["steps"] == 4
        assert (result["world_size"], result["global_batch"]) == (2, 8)
        ranks = result["workers"]
        assert [w["rank"] for w in ranks] == [0, 1]
        assert len({w["node_id"] for w in ranks}) == 2  # one CPU per node: one rank on each
        assert [c["step"] for c in result["checkpoints"]] == [2, 4]
        for point in result["checkpoints"]:
            checkpoints.load(point["path"])  # written by rank 0, in the usual format
        assert len(result["train_log"]) == 4
        last = result["checkpoints"][-1]
        alone = scoring.evaluate(*checkpoints.load_for_eval({"checkpoint": last["path"]}), where.load_config().eval)
        for kind, task, scored in _likelihood_tasks(last):  # the test's thread count may differ from the ranks'
            assert scored["score"] == pytest.approx(alone[kind]["tasks"][task]["score"], abs=1e-6), (kind, task)
    study = sw.study(where.root)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(where.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=20)
    trials = {r.data.tags["peft_arena.trial_id"]: r for r in runs if r.data.tags.get("peft_arena.kind") == "trial"}
    assert trials.keys() == {r["trial_id"] for r in results}
    for result in results:
        loss = client.get_metric_history(trials[result["trial_id"]].info.run_id, "loss")
        assert sorted((m.step, m.value) for m in loss) == [(r["step"], r["loss"]) for r in result["train_log"]]


@pytest.mark.timeout(1200)
def test_a_killed_worker_restarts_the_group_and_the_trial_completes_from_its_checkpoint(tmp_path, tiny_model_dir,
                                                                                      cluster):
    """SIGKILL of rank 1 once the trial has a checkpoint: Ray Train restarts both ranks, the trial resumes
    from its last verified checkpoint (exactly: moments and random states of both ranks) and completes."""
    import os
    import signal

    from orchestrator.storage.sweep_dir import SweepDir
    from tests import sweeps as sw

    config = _sweep_config(tmp_path, tiny_model_dir, steps=40, checkpoint_every=4)
    where = SweepDir(tmp_path / "sweep")
    proc = sw.sweep(config, cluster, "--set", "methods=[{name: lora, settings: [{r: 2}]}]")
    sw.wait_for(lambda: any(r["checkpoints"] for r in where.collect()), proc, timeout=900)
    running = next(r for r in where.collect() if r["checkpoints"])
    victim = next(w for w in running["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    output, _ = proc.communicate(timeout=1100)
    assert proc.returncode == 0, output[-3000:]
    result = where.collect()[0]
    assert result["status"] == "completed" and result["steps"] == 40
    assert result["attempts"] >= 2 and 4 <= result["resumed_from_step"] < 40 and result["resumed"] == "exact"
    assert victim["pid"] not in {w["pid"] for w in result["workers"]}  # a new group ...
    assert result["driver_pid"] == running["driver_pid"]  # ... started by Ray Train in the same Tune trial
    assert [t.state.name for t in sw.study(where.root).trials] == ["COMPLETE"]
    assert [c["step"] for c in result["checkpoints"]] == list(range(4, 41, 4))
    assert [r["step"] for r in result["train_log"]] == list(range(1, 41))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: `make gpu-check` runs for real")
def test_gpu_check_says_why_it_skips_without_a_gpu():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench.gpu_check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "gpu-check: skipped: no CUDA GPU on this machine" in out.stdout
