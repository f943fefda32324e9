"""Scorers: log-likelihood multiple choice, answer / text NLL, and greedy generation with exact match.

All scorers batch requests sorted by length (fewer pad tokens), pad on the right for teacher-forced
scoring and on the left for generation, and return plain floats. Tokenisation follows
lm-evaluation-harness (`_encode_pair`): the continuation's tokens are those of `context + continuation`
past the context's tokens, so that our accuracies agree with lm-eval's on the same items.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
from torch import nn


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a context and its continuation, as lm-eval splits them (trailing context spaces move
    to the continuation, so " Paris" is scored as the model would generate it)."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def _length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


@torch.inference_mode()
def continuation_logprobs(model: nn.Module, tokenizer: Any, pairs: Sequence[tuple[list[int], list[int]]],
                          batch_size: int = 16, max_length: int = 1024) -> list[tuple[float, int]]:
    """Sum of log p(continuation | context) and the continuation's token count, for each (ctx, cont) pair.
    Long sequences lose tokens from the left of the context, never from the continuation."""
    seqs = []
    for ctx, cont in pairs:
        if not cont:
            raise ValueError("empty continuation")
        seq = (ctx + cont)[-max_length:]
        seqs.append((seq, len(cont)))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    for batch in _length_sorted_batches([len(s) for s, _ in seqs], batch_size):
        width = max(len(seqs[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = seqs[i][0]
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for row, i in enumerate(batch):
            seq, n_cont = seqs[i]
            start = len(seq) - n_cont
            # logits at position t predict token t+1
            logp = torch.log_softmax(logits[row, start - 1:len(seq) - 1], dim=-1)
            target = torch.tensor(seq[start:], device=logp.device)
            out[i] = (float(logp.gather(1, target[:, None]).sum()), n_cont)
    return out


def multiple_choice(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, Any]],
                    batch_size: int = 16) -> dict[str, float]:
    """`acc`: argmax of summed log-likelihood; `acc_norm`: argmax of log-likelihood per character of the
    choice (lm-eval's definition). Items: {context, choices, gold}; choices are joined with a space."""
    pairs = [encode_pair(tokenizer, item["context"], " " + choice)
             for item in items for choice in item["choices"]]
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size)
    acc = acc_norm = 0
    cursor = 0
    for item in items:
        lls = [s for s, _ in scores[cursor:cursor + len(item["choices"])]]
        cursor += len(item["choices"])
        normed = [ll / len(choice) for ll, choice in zip(lls, item["choices"])]
        acc += int(max(range(len(lls)), key=lls.__getitem__) == item["gold"])
        acc_norm += int(max(range(len(normed)), key=normed.__getitem__) == item["gold"])
    n = max(len(items), 1)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "n": len(items)}


def answer_nll(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, str]],
               batch_size: int = 16) -> dict[str, float]:
    """Mean per-token NLL (nats) of the reference answer given the prompt; `answer_token_prob` is
    exp(-NLL), the geometric-mean token probability, a [0, 1] higher-is-better score."""
    pairs = [encode_pair(tokenizer, it["prompt"], it["answer"]) for it in items]
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size)
    nll = -sum(s for s, _ in scores) / max(sum(n for _, n in scores), 1)
    return {"nll": nll, "answer_token_prob": math.exp(-nll), "n": len(items)}


def text_nll(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_tokens: int = 128,
             batch_size: int = 16) -> dict[str, float]:
    """Token-weighted mean NLL of plain text (each text cut to `max_tokens`; the first token is the
    context); `token_prob` = exp(-NLL), perplexity's reciprocal, in [0, 1] and higher-is-better."""
    pairs = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) >= 2:
            pairs.append((ids[:1], ids[1:]))
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size)
    tokens = sum(n for _, n in scores)
    nll = -sum(s for s, _ in scores) / max(tokens, 1)
    return {"nll": nll, "token_prob": math.exp(-nll), "perplexity": math.exp(nll), "tokens": tokens,
            "n": len(pairs)}


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"


def extract_answer(text: str) -> str | None:
    """The final answer of a reply: `#### N`, else `\\boxed{N}`, else the last number (GSM8K convention).
    reasoning-gym's own scorer takes the first number, which misreads chain-of-thought replies."""
    for pattern in (rf"####\s*({_NUMBER})", r"\\boxed\{([^{}]*)\}"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip()
    numbers = re.findall(_NUMBER, text)
    return numbers[-1] if numbers else None


def answers_match(predicted: str | None, reference: str) -> bool:
    if predicted is None:
        return False
    clean = lambda s: s.replace(",", "").strip().rstrip(".")  # noqa: E731
    try:
        return math.isclose(float(clean(predicted)), float(clean(reference)), rel_tol=0, abs_tol=1e-6)
    except ValueError:
        return clean(predicted) == clean(reference)


@torch.inference_mode()
def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
             batch_size: int = 16) -> list[str]:
    """Greedy completions (KV-cached `generate`, left padding), decoded without special tokens."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out: list[str] = [""] * len(prompts)
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    for batch in _length_sorted_batches([len(e) for e in encoded], batch_size):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                                   eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(batch):
            out[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
    return out


def generate_exact_match(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, str]],
                         max_new_tokens: int = 16, batch_size: int = 16) -> dict[str, Any]:
    replies = generate(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size)
    hits = [answers_match(extract_answer(r), it["answer"]) for r, it in zip(replies, items)]
    return {"exact_match": sum(hits) / max(len(hits), 1), "n": len(items), "examples": replies[:3]}
