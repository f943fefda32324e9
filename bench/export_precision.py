"""How exactly an export reproduces its checkpoint on the default model (SmolLM2-135M, fp32): a LoRA r8 trial
trained by `peft-arena run`, exported by `peft-arena export` as a peft adapter and as merged weights, each
loaded the way a user loads it (`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)`,
`AutoModelForCausalLM.from_pretrained(dir)`) in this process, against the project's own loaded checkpoint,
on the same prompts. Metric: the largest |logit difference| of the merged export, beside the adapter's and
the largest |logit| (a merged export rounds W0 + dW once in fp32, so its error scales with the logits).
Reported, no goal: the README quotes it.

    python -m bench.export_precision
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = ["Question: What is 17 + 25?\nAnswer:", "The capital of France is", "A definition of a river:"]


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], check=True, capture_output=True, text=True)


def main() -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bench.common import record
    from orchestrator.storage.sweep_dir import SweepDir
    from orchestrator.trials import checkpoints

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _cli("run", "quick", "--method", "lora", "--setting", "r=8", "--set", "train.steps=8", "--set", "train.lr=1e-2",
             "--set", "train.checkpoint_every=8", "--set", "eval.max_items=4", "--set", "tracking.enabled=false",
             "--set", f"output_dir={out}/sweep")
        (result,) = SweepDir(out / "sweep").collect()
        for merged in (False, True):
            _cli("export", str(out / "sweep"), result["trial_id"], "--to", str(out / ("merged" if merged else "adapter")),
                 *(["--merged"] if merged else []))
        ours, tokenizer = checkpoints.load_for_eval({"checkpoint": result["checkpoints"][-1]["path"]})
        base = json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
        adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "adapter").eval()
        merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
        worst = {"adapter": 0.0, "merged": 0.0, "logit": 0.0}
        with torch.no_grad():
            for prompt in PROMPTS:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
                reference = ours.eval()(input_ids=ids).logits
                worst["logit"] = max(worst["logit"], float(reference.abs().max()))
                for name, model in (("adapter", adapter), ("merged", merged)):
                    worst[name] = max(worst[name], float((model(input_ids=ids).logits - reference).abs().max()))
    record("export_precision", "largest abs logit difference, merged export vs the loaded checkpoint",
           worst["merged"], worst["logit"], "reported (no goal): baseline = the largest abs logit", True,
           adapter_max_abs_diff=worst["adapter"], merged_max_abs_diff=worst["merged"], max_abs_logit=worst["logit"],
           model="SmolLM2-135M fp32, LoRA r8, 8 steps at lr 1e-2", prompts=len(PROMPTS))


if __name__ == "__main__":
    main()
