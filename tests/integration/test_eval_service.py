"""The sweep's evaluation service (eval.mode: pool) on a real local Ray cluster: the same scores as a trial
scoring in-process, and no chunk lost or doubled when an actor is SIGKILLed mid-chunk."""
from __future__ import annotations

import json
import os
import signal

import psutil
import pytest
import yaml

from evals import runner, service, suites
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.trials import checkpoints
from tests import sweeps as sw
from tests.helpers import LOCAL_RETENTION, tiny_config, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _scores(result: dict) -> list[tuple]:
    return [(c["step"], c["target"], c["retention"], c["gain"], c["forgetting"]) for c in result["checkpoints"]]


def test_a_sweep_scored_on_the_pool_equals_the_same_sweep_scored_inline(tmp_path, tiny_model_dir, isolated_cache):
    by_mode = {}
    for mode in ("inline", "pool"):
        cfg = tiny_config(tiny_model_dir, tmp_path / mode, steps=6, checkpoint_every=2)
        cfg["methods"] = [{"name": "lora", "settings": [{"r": 2}]}, {"name": "oft"}]
        cfg["search"] = {"sampler": "grid"}
        cfg["eval"] |= {"mode": mode, "pool_size": 1, "cpus_per_actor": 0.5}
        cfg["resources"] = {"cpus_per_worker": 1}
        cfg["ray"] = {"num_cpus": 2}
        cfg["tracking"] = {"enabled": False}
        config = tmp_path / f"{mode}.yaml"
        config.write_text(yaml.safe_dump(cfg))
        output, _ = (proc := sw.sweep(config, "local")).communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
        by_mode[mode] = {r["method"]: r for r in sw.results(tmp_path / mode)}
    inline, pool = by_mode["inline"], by_mode["pool"]
    assert set(inline) == set(pool) == {"lora", "oft"}
    for method in inline:
        assert len(pool[method]["checkpoints"]) == 3
        assert _scores(pool[method]) == _scores(inline[method])  # every float
        for a, b in zip(pool[method]["checkpoints"], inline[method]["checkpoints"]):
            assert a["retention"]["tasks"] == b["retention"]["tasks"]  # per item too
        assert pool[method]["config_hash"] == inline[method]["config_hash"]  # where it is scored is not what
        assert "eval_collect_s" in pool[method]["timings"]
    # rewinding every trial of each sweep: the pool scores all their path points as one dataset, the same
    rewound = {}
    for mode in ("inline", "pool"):
        done = sw.cli("rewind", str(tmp_path / mode), "--alphas", "0.5")
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(SweepDir(tmp_path / mode).rewinding.read_text())
        rewound[mode] = {r["method"]: [(p["label"], p["target"], p["retention"]) for p in r["points"]]
                         for r in summary["trials"]}
    assert rewound["pool"] == rewound["inline"] and rewound["pool"]


def _chunk_scorers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if "ChunkScorer" in " ".join(p.info["cmdline"] or [])]


def test_an_actor_killed_mid_chunk_loses_and_doubles_no_chunk(tiny_model_dir, isolated_cache):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    try:
        spec = {"model": {"name": str(tiny_model_dir)}}
        model, tokenizer = checkpoints.load_for_eval(spec)
        refs = {"target": "arithmetic", "retention": LOCAL_RETENTION}
        rendered = runner.render(tokenizer, refs, max_items=40)
        expected = {kind: suites.evaluate_suite(model, tokenizer, kind, ref, max_items=40, batch_size=8)
                    for kind, ref in refs.items()}
        handle = service.start("test-eval-service", checkpoints.load_for_eval, 1, 0.5, 0.0, 8)
        requests = [f"checkpoint-{i}" for i in range(6)]
        for request in requests:
            ray.get(handle.submit.remote(request, spec, rendered.chunks))
        wait_until(lambda: ray.get(handle.stats.remote())["chunks_scored"] >= 2,
                   "the service's actor up and mid-way (two chunks scored)")
        victims = _chunk_scorers()
        assert victims, "no scoring actor found"
        for victim in victims:
            os.kill(victim.pid, signal.SIGKILL)
        scored = {r: runner.assemble(rendered, ray.get(handle.collect.remote(r, 600))) for r in requests}
        stats = ray.get(handle.stats.remote())
        service.stop(handle)
    finally:
        ray.shutdown()
    assert all(s == expected for s in scored.values())  # every chunk once, each the same numbers
    assert stats["chunks_scored"] == len(requests) * len(rendered.chunks) and stats["pending"] == 0
    assert len(rendered.chunks) > 2
