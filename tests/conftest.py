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


@pytest.fixture()
def cluster(tmp_path, isolated_cache):
    """A real two-node local Ray cluster, one CPU each; stopped (with everything Ray) afterwards."""
    from tests import sweeps

    address = sweeps.start_cluster()
    yield address
    sweeps.stop_cluster(address)


@pytest.fixture()
def s3(tmp_path, monkeypatch):
    """A real S3-compatible server on loopback (tests/object_store.py) with bucket `test-bucket`; its
    endpoint and moto's test credentials in the environment (so a cluster started after it inherits them)."""
    from tests import object_store

    for server in object_store.serve(tmp_path / "moto.log"):
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        yield server


@pytest.fixture()
def s3_cluster(s3, cluster):
    """The two-node cluster, started with the S3 server's environment (the order of these fixtures)."""
    return cluster


KINDS = ("unit", "integration", "faults", "bad_inputs", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
