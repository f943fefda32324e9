"""Shared fixtures: a tiny Llama built from a config (no weights downloaded) with a tiny byte-level BPE
tokenizer, saved as a local model dir, so unit and integration tests run offline in seconds; and the test
kinds as markers (unit, integration, faults, bad_inputs, e2e), taken from each test's folder, so that
`pytest -m integration` selects a kind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import build_tiny_model, build_tiny_tokenizer

os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    return build_tiny_model(len(tiny_tokenizer)).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A local HF model dir (safetensors + tokenizer) — the same path users take with their own models."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(len(tiny_tokenizer)).save_pretrained(path, safe_serialization=True)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private PEFT_ARENA_CACHE; tests that only need task data copy in what they use."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PEFT_ARENA_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3-compatible server on loopback (tests/object_store.py) for the session, bucket `test-bucket`."""
    from tests import object_store

    yield from object_store.serve(tmp_path_factory.mktemp("moto") / "moto.log")


@pytest.fixture()
def s3(s3_server, monkeypatch):
    """The session's S3 server with an empty bucket behind a listening relay, its endpoint and moto's test
    credentials in this test's environment."""
    s3_server.reset()
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    yield s3_server
    s3_server.relay.restore()  # a test that cut the store leaves it reachable for the next


@pytest.fixture(scope="session")
def shared_cluster(s3_server):
    """One real two-node local Ray cluster, one CPU each, for every test that only runs sweeps on it. Its
    nodes bring the S3 server's credentials themselves, as a real cluster's nodes do (the driver forwards
    the endpoint, never credentials); what each test's driver sets (cache, tracking) travels with its job."""
    from tests import sweeps

    address = sweeps.start_cluster(env=s3_server.credentials)
    yield address
    sweeps.stop_cluster(address)


@pytest.fixture()
def cluster(shared_cluster, isolated_cache):
    """The shared cluster, once the previous test's trials have let go of every CPU."""
    from tests import sweeps

    sweeps.wait_idle(shared_cluster)
    return shared_cluster


@pytest.fixture()
def private_cluster(isolated_cache):
    """A two-node cluster of this test's own, for a test that destroys a node; stopped afterwards."""
    from tests import sweeps

    address = sweeps.start_cluster()
    yield address
    sweeps.stop_cluster(address)


@pytest.fixture()
def s3_cluster(s3, cluster):
    """The shared cluster, for a test whose sweep keeps its dir in the S3 server's bucket."""
    return cluster


KINDS = ("unit", "integration", "faults", "bad_inputs", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
