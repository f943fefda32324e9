"""Builders the tests share: a tiny Llama from a config (no weights downloaded), a tiny byte-level BPE
tokenizer, and a tiny sweep config over local task fixtures. Plain functions, imported by tests; the
pytest fixtures over them live in conftest.py."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"
LOCAL_RETENTION = [str(FIXTURE_TASKS / "text_local.yaml"), str(FIXTURE_TASKS / "mc_local.yaml")]

TINY_CORPUS = [
    "Question: What is 12 + 7? Reply with the number only.\nAnswer: 19",
    "The capital of France is Paris. Water boils at 100 degrees.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ? . , ! yes no four two six",
] * 20


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


def build_tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, initializer_range=0.3, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return LlamaForCausalLM(config)


def tiny_config(model_dir: Path, out_dir: Path, **train) -> dict:
    """A sweep config dict for the tiny model: a few steps, a few eval items, LoRA."""
    return {
        "name": "tiny",
        "output_dir": str(out_dir),
        "model": {"name": str(model_dir)},
        "train": {"task": "arithmetic", "train_items": 32, "steps": 4, "batch_size": 4, "max_length": 64,
                  "lr": 5e-3, "checkpoint_every": 2, **train},
        "eval": {"target_suite": "arithmetic", "retention_suite": LOCAL_RETENTION,
                 "max_items": 4, "batch_size": 8},
        "methods": [{"name": "lora", "settings": [{"r": 2}]}],
    }


def wait_until(predicate: Callable[[], object], what: str, *, timeout: float = 900,
               alive: subprocess.Popen | None = None, poll: float = 0.05) -> None:
    """Wait for an event the product marks (a file it writes, a line it logs, a state it reaches). The
    timeout is only a guard against a hang, generous so that a loaded machine never trips it; when it
    trips, or when `alive` (the process that should bring the event) ends first, the failure names the
    event awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive is not None and alive.poll() is not None:
            out = alive.stdout.read()[-3000:] if alive.stdout else ""
            raise AssertionError(f"process ended ({alive.returncode}) before {what}: {out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f} s: {what}")
        time.sleep(poll)  # the poll interval of the watch, not a stand-in for the event
