"""Exported adapters and merged models load with plain peft / transformers in a fresh process and compute
what PEFT-Arena's own loaded checkpoint (or path point) computes, to 1e-5, for every registered method."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from methods import registry
from orchestrator.results import export
from orchestrator.trials import checkpoints, regimes
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Loads every exported folder with nothing but transformers and peft, as a user of the adapter would.
LOADER = """
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from peft import PeftModel

base_dir, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
out = {}
for folder in sorted(Path(sys.argv[3]).iterdir()):
    if (folder / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        out[folder.name] = model.eval()(input_ids=ids).logits.contiguous()
save_file(out, sys.argv[4])
"""
IDS = [[5, 17, 33, 2, 41, 9, 77, 12], [3, 3, 60, 18, 25, 101, 7, 44]]


def _randomised_checkpoint(model_dir: Path, tokenizer, method: str, directory: Path) -> Path:
    """A checkpoint of `method` whose adapter is well away from its identity init, as training leaves it."""
    pairs = [(tokenizer("What is 2 + 3?")["input_ids"], tokenizer(" 5</s>")["input_ids"])] * 4
    spec = registry.get(method)
    setting = spec.resolve_setting(spec.tiny)
    from transformers import AutoModelForCausalLM

    wrapped = registry.wrap(AutoModelForCausalLM.from_pretrained(model_dir), method, setting, "all-linear", seed=1,
                            init_batch=regimes.collate(pairs, 32, tokenizer.pad_token_id))
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for param in wrapped.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    meta = {"method": method, "setting": setting, "seed": 1, "step": 1, "loss": 0.0, "config_hash": "test",
            "model": {"name": str(model_dir), "dtype": "float32", "target_modules": "all-linear", "trust_pickle": False}}
    return checkpoints.save(wrapped, directory, meta)


def _ours(spec: dict) -> torch.Tensor:
    model, _ = checkpoints.load_for_eval(spec)
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor(IDS)).logits


def _theirs(model_dir: Path, exported: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    out = tmp_path / "theirs.safetensors"
    done = subprocess.run([sys.executable, "-c", LOADER, str(model_dir), json.dumps(IDS), str(exported), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(str(out))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    """Every method's checkpoint, and a few path points, exported; then loaded by peft in one fresh process."""
    root = tmp_path_factory.mktemp("export")
    specs, records = {}, {}
    for method in registry.names():
        specs[method] = {"checkpoint": str(_randomised_checkpoint(tiny_model_dir, tiny_tokenizer, method,
                                                                   root / "checkpoints" / method))}
    points = {"lora@0.4": {**specs["lora"], "alpha": 0.4},
              "pissa@0.4": {**specs["pissa"], "alpha": 0.4},
              "oft-cayley@0.3": {**specs["oft"], "alpha": 0.3, "path": "auto"},
              "lora-layerwise": {**specs["lora"], "alpha": 1.0, "layer_factors": {"0": 0.5, "1": 0.25}},
              "oft-dense@0.5": {**specs["oft"], "alpha": 0.5, "path": "dense"},
              "dora@0.5": {**specs["dora"], "alpha": 0.5},
              "lora-merged": {**specs["lora"]}}
    for name, spec in {**specs, **points}.items():
        records[name] = export.write_point(spec, root / "out" / name, merged=name == "lora-merged")
    theirs = _theirs(tiny_model_dir, root / "out", root)
    base = _ours({"model": {"name": str(tiny_model_dir)}})
    return {"specs": {**specs, **points}, "records": records, "theirs": theirs, "root": root, "base": base}


@pytest.mark.parametrize("method", registry.names())
def test_every_methods_export_loads_with_plain_peft_and_matches(exported, method):
    record = exported["records"][method]
    assert record["kind"] == ("merged" if method == "full" else "adapter"), record
    expected = _ours(exported["specs"][method])
    assert (expected - exported["base"]).abs().max() > 1e-3  # a real update, not the identity
    # fp32 logits of order 1, computed through two different graphs (peft's layers vs ours): up to 1.7e-5
    # apart on an AVX-512 CPU (PiSSA, KeepLoRA), where 1e-5 failed by chance; an export error is >= 1e-3
    torch.testing.assert_close(exported["theirs"][method], expected, atol=5e-5, rtol=1e-5)


def test_residual_base_methods_export_a_plain_lora_of_twice_the_rank_on_w0(exported):
    config = json.loads((exported["root"] / "out" / "pissa" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 * registry.get("pissa").tiny["r"]
    assert config.get("init_lora_weights") in (False, None)  # nothing to re-run at load time


@pytest.mark.parametrize("point,kind", [("lora@0.4", "adapter"), ("pissa@0.4", "adapter"), ("oft-cayley@0.3", "adapter"),
                                        ("lora-layerwise", "adapter"), ("oft-dense@0.5", "merged"),
                                        ("dora@0.5", "merged")])
def test_path_points_export_as_adapters_of_their_method_where_the_path_allows(exported, point, kind):
    record = exported["records"][point]
    assert record["kind"] == kind, record
    if kind == "merged":
        assert record["merged_because"]
        assert "Merged because" in (exported["root"] / "out" / point / "README.md").read_text()
    torch.testing.assert_close(exported["theirs"][point], _ours(exported["specs"][point]), atol=1e-5, rtol=1e-5)


def test_an_oft_point_on_the_cayley_path_is_still_an_oft_adapter(exported):
    config = json.loads((exported["root"] / "out" / "oft-cayley@0.3" / "adapter_config.json").read_text())
    assert config["peft_type"] == "OFT"
    scaled = load_file(str(exported["root"] / "out" / "oft-cayley@0.3" / "adapter_model.safetensors"))
    final = load_file(str(exported["root"] / "out" / "oft" / "adapter_model.safetensors"))
    for key, value in scaled.items():  # generators scaled by sqrt(0.3)
        torch.testing.assert_close(value, final[key] * 0.3 ** 0.5, atol=1e-7, rtol=1e-6)


def test_a_merged_export_equals_merging_the_adapter_export(exported, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                        exported["root"] / "out" / "lora")
    merged = adapter.merge_and_unload().state_dict()
    written = load_file(str(exported["root"] / "out" / "lora-merged" / "model.safetensors"))
    assert set(written) <= set(merged)
    for key, value in written.items():
        torch.testing.assert_close(value, merged[key], atol=1e-5, rtol=1e-5)
    card = (exported["root"] / "out" / "lora" / "README.md").read_text()
    base = json.loads((exported["root"] / "out" / "lora" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert ("Exported by PEFT-Arena as a peft adapter: `PeftModel.from_pretrained(AutoModelForCausalLM."
            f"from_pretrained({base!r}), THIS_DIR)`.") in card  # the line a reader copies loads the adapter's base
    assert f"loaded from `{base}`" in card and "| method | lora |" in card


def test_a_registered_adapter_loads_through_mlflow_and_reproduces_the_checkpoint(tmp_path, tiny_model_dir,
                                                                                  isolated_cache):
    """`peft-arena register`: a version of an MLflow registered model, under the trial's run, that
    `mlflow.transformers.load_model` rebuilds on the base model with the checkpoint's outputs (1e-5)."""
    import mlflow

    from orchestrator import config
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import trial

    cfg = config.validate(tiny_config(tiny_model_dir, tmp_path / "sweep"))
    where = SweepDir.of(cfg)
    where.claim(cfg, resume=False)
    result = trial.run(cfg, "lora", {"r": 2}, where.trial("lora-r2"))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "register", str(where.root), "lora-r2",
                           "--name", "tiny-lora"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "models:/tiny-lora/1" in done.stdout

    mlflow.set_tracking_uri(where.mlflow_uri)
    loaded = mlflow.transformers.load_model("models:/tiny-lora/1", return_type="components")
    trained, tokenizer, _ = checkpoints.load_trained(Path(result["checkpoints"][-1]["path"]))
    ids = torch.tensor([tokenizer("Question: What is 3 + 4?\nAnswer:")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded["model"](input_ids=ids).logits, trained(input_ids=ids).logits,
                                   atol=1e-5, rtol=0)
    version = mlflow.MlflowClient().get_model_version("tiny-lora", "1")
    run = mlflow.MlflowClient().get_run(version.run_id)
    assert run.data.tags["peft_arena.trial_id"] == "lora-r2" and run.info.status == "FINISHED"
