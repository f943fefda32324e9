"""GPU check: one short data-parallel trial step loop on whatever GPUs this machine has - 2 Ray Train workers
(1 if there is one GPU) x 1 GPU, the default model in bf16, NCCL, DeepSpeed ZeRO-2 with its fused AdamW
(the trainer picks it on GPUs) - printing training tokens/s, achieved TFLOP/s and peak memory per GPU.

Achieved FLOP/s counts the model's matmuls only, per trained token: 2N forward and 2N for the gradients
of the activations (N = parameters; a frozen weight needs no weight gradient, and LoRA's own weights add
< 1%), i.e. 4N per token; attention's score matmuls are left out, so the figure is a lower bound.

    python -m bench.gpu_check            # on a GPU machine (`make gpu-check`)
    python -m bench.gpu_check --cpu      # the same path on CPUs (gloo, fp32, a few tokens): checks the script

Without a CUDA GPU (and without --cpu) it says so and exits 0: CI runs on CPUs and skips it with that line.
"""
from __future__ import annotations

import argparse
import json


def main() -> int:
    import ray
    import torch

    from bench.data_parallel import measure, start_ray

    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="run the check's path on CPUs (no GPU numbers)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    if not gpus and not args.cpu:
        print("gpu-check: skipped: no CUDA GPU on this machine (run it where there is one, or --cpu to check the path)")
        return 0
    start_ray(**({} if gpus and not args.cpu else {"num_cpus": 2}))
    workers = min(2, gpus) if gpus and not args.cpu else 2
    if args.cpu:
        seen = measure(workers, 1, steps=2, batch=2, accum=1, length=32)
    else:
        seen = measure(workers, 2, steps=args.steps, batch=8, accum=1, length=512, zero=2, gpus=1, dtype="bfloat16")
    ray.shutdown()
    flops = 4 * seen["params"] * seen["tokens_per_s"]
    device = "cpu (gloo, fp32)" if args.cpu else f"{torch.cuda.get_device_name(0)} x {workers} (NCCL, bf16, ZeRO-2)"
    print(json.dumps({"device": device, "world_size": seen["world_size"], "global_batch": seen["global_batch"],
                      "tokens_per_s": round(seen["tokens_per_s"], 1), "achieved_tflops": round(flops / 1e12, 3),
                      "achieved_tflops_per_gpu": round(flops / 1e12 / workers, 3),
                      "peak_gib_per_gpu": [round(p, 2) for p in seen["peak_gib_per_rank"]],
                      "step_s": round(seen["step_s"], 3), "losses": [round(x, 4) for x in seen["losses"]]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
