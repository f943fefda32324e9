"""Object-storage URIs in configs, and the order in which a sweep dir's files go up."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.storage.bucket import _in_upload_order, is_remote
from tests.helpers import tiny_config


@pytest.mark.parametrize("location,remote", [("s3://b/x", True), ("gs://b/x", True), ("runs/x", False),
                                             ("/abs/x", False), ("file:///abs/x", False), ("S3://b/x", True)])
def test_which_output_dirs_are_object_storage(location, remote):
    assert is_remote(location) is remote


def test_a_uri_output_dir_keeps_its_scheme_and_fills_in_the_name(tmp_path):
    cfg = config.validate(tiny_config(tmp_path, "s3://bucket/sweeps/{name}/"))
    assert cfg.output_dir == "s3://bucket/sweeps/tiny"
    local = config.validate(tiny_config(tmp_path, f"file://{tmp_path}/runs/{{name}}"))
    assert local.output_dir == str(tmp_path / "runs" / "tiny")


def test_upload_order_puts_every_json_after_the_files_it_vouches_for():
    files = [Path(p) for p in ("t/result.json", "t/checkpoints/step_2/checkpoint.json", "t/rewind.json",
                               "t/checkpoints/step_2/adapter.safetensors", "t/checkpoints/step_2/resume.json",
                               "t/checkpoints/step_2/resume.safetensors", "t/rewound/a/adapter.safetensors",
                               "t/rewound/a/point.json")]
    order = [p.as_posix() for p in _in_upload_order(files)]
    first_json = next(i for i, p in enumerate(order) if p.endswith(".json"))
    assert all(not p.endswith(".json") for p in order[:first_json])
    assert all(p.endswith(".json") for p in order[first_json:])
    assert order.index("t/result.json") > order.index("t/checkpoints/step_2/checkpoint.json")
    assert order.index("t/rewind.json") > order.index("t/rewound/a/point.json")
    # a checkpoint that verifies in the store (its checkpoint.json is there) has its resume state beside it
    assert order.index("t/checkpoints/step_2/checkpoint.json") > order.index("t/checkpoints/step_2/resume.json")


def test_a_result_written_elsewhere_names_checkpoints_in_the_readers_sweep_dir(tmp_path):
    """A trial on another node wrote its result with its own paths; a duplicate's checkpoints are its
    original's. Read through the sweep dir, every path points at the folder here that holds the files."""
    from orchestrator.storage.sweep_dir import SweepDir

    where = SweepDir(tmp_path / "sweep")
    elsewhere = "/node-b/tmp/peft-arena-trial-x/trials"
    where.trial("a").write_result({"trial_id": "a", "trial_dir": f"{elsewhere}/a", "checkpoints": [
        {"step": 2, "path": f"{elsewhere}/a/checkpoints/step_000002"}, {"step": 4, "gain": 0.1}]})
    where.trial("b").write_result({"trial_id": "b", "trial_dir": f"{elsewhere}/b", "duplicate_of": "a",
                                   "checkpoints": [{"step": 2, "path": f"{elsewhere}/a/checkpoints/step_000002"}]})
    found = {r["trial_id"]: r for r in where.collect()}
    assert found["a"]["trial_dir"] == str(where.trial("a").root)
    assert found["a"]["checkpoints"] == [{"step": 2, "path": str(where.trial("a").checkpoint(2))},
                                         {"step": 4, "gain": 0.1}]
    assert found["b"]["checkpoints"][0]["path"] == str(where.trial("a").checkpoint(2))
