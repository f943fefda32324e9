"""Sharded evaluation on a real Ray Data actor pool gives the very same numbers as in-process scoring,
whatever the pool size."""
from __future__ import annotations

import pytest

from evals import runner, suites
from orchestrator.trials import checkpoints
from tests.helpers import LOCAL_RETENTION

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()


def test_pool_sizes_one_and_two_give_identical_scores(tiny_model_dir, local_ray):
    spec = {"model": {"name": str(tiny_model_dir)}}
    model, tokenizer = checkpoints.load_for_eval(spec)
    refs = {"target": "arithmetic", "retention": LOCAL_RETENTION}
    one, = runner.evaluate_specs(checkpoints.load_for_eval, tokenizer, [spec], refs, max_items=40, batch_size=8,
                                 pool_size=1)
    two, = runner.evaluate_specs(checkpoints.load_for_eval, tokenizer, [spec], refs, max_items=40, batch_size=8,
                                 pool_size=2)
    assert one == two  # every float, every reply
    local = {kind: suites.evaluate_suite(model, tokenizer, kind, ref, max_items=40, batch_size=8)
             for kind, ref in refs.items()}
    assert one == local
    assert one["target"]["tasks"]["arithmetic"]["n"] == 40 > suites.CHUNK_ITEMS  # really more than one chunk
