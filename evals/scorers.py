"""Scorers: log-likelihood multiple choice, answer / text NLL, and greedy generation with exact match.

All scorers batch requests sorted by length (fewer pad tokens), pad on the right for teacher-forced
scoring and on the left for generation, and return plain floats. Tokenisation follows
lm-evaluation-harness (`_encode_pair`): the continuation's tokens are those of `context + continuation`
past the context's tokens, so that our accuracies agree with lm-eval's on the same items.
"""
from __future__ import annotations

import math
import re
import threading
from typing import Any, Callable, Collection, Sequence

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


def pad_batch(seqs: Sequence[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists as one [batch, longest] id tensor and its attention mask; right padding for scoring
    and training, left padding where generation or a shared KV cache continues from the last token."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


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
        ids, mask = pad_batch([seqs[i][0] for i in batch], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for row, i in enumerate(batch):
            seq, n_cont = seqs[i]
            start = len(seq) - n_cont
            # logits at position t predict token t+1
            logp = torch.log_softmax(logits[row, start - 1:len(seq) - 1], dim=-1)
            target = torch.tensor(seq[start:], device=logp.device)
            out[i] = (float(logp.gather(1, target[:, None]).sum()), n_cont)
    return out


@torch.inference_mode()
def choice_loglikelihoods(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, Any]],
                          batch_size: int = 16, max_length: int = 1024) -> list[list[float]]:
    """Per item, per choice: log p(" " + choice | context), with each item's context run once.

    The contexts of a batch of items go through the model together (left-padded, explicit positions), only
    their last position reaching the LM head; the KV cache is then repeated once per choice and all
    continuations of the batch are scored in one more pass. The model sees exactly lm-eval's input,
    context tokens + continuation tokens, so the numbers agree with lm-eval's (to float rounding)."""
    device = next(model.parameters()).device
    pad = _pad_id(tokenizer)
    encoded = []
    for item in items:
        pairs = [encode_pair(tokenizer, item["context"], " " + choice) for choice in item["choices"]]
        longest = max(len(cont) for _, cont in pairs)
        ctx = pairs[0][0][-(max_length - longest):]  # shared by every choice (lm-eval encodes it alone)
        encoded.append((ctx, [cont for _, cont in pairs]))
    out: list[list[float]] = [[] for _ in items]
    for batch in _length_sorted_batches([len(c) for c, _ in encoded], batch_size):
        ctx_ids, ctx_mask = pad_batch([encoded[i][0] for i in batch], pad, left=True)
        positions = (ctx_mask.cumsum(1) - 1).clamp(min=0)
        first = model(input_ids=ctx_ids.to(device), attention_mask=ctx_mask.to(device),
                      position_ids=positions.to(device), use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)
        owners = [row for row, i in enumerate(batch) for _ in encoded[i][1]]
        conts = [cont for i in batch for cont in encoded[i][1]]
        cache = first.cache
        cache.reorder_cache(torch.tensor(owners, device=device))  # one cache row per choice
        cont_ids, cont_mask = pad_batch(conts, pad)
        width = cont_ids.shape[1]
        lengths = ctx_mask.sum(1)[owners]
        cont_positions = lengths[:, None] + torch.arange(width)[None, :]
        logits = model(input_ids=cont_ids.to(device), attention_mask=torch.cat([ctx_mask[owners], cont_mask], 1).to(device),
                       position_ids=cont_positions.to(device), cache=cache, use_cache=True).logits.float()
        for row, (owner, cont) in enumerate(zip(owners, conts)):
            total = float(first_logp[owner, cont[0]])
            if len(cont) > 1:
                logp = torch.log_softmax(logits[row, :len(cont) - 1], dim=-1)
                total += float(logp.gather(1, torch.tensor(cont[1:], device=logp.device)[:, None]).sum())
            out[batch[owner]].append(total)
    return out


def multiple_choice_items(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, Any]],
                          batch_size: int = 16) -> list[dict[str, Any]]:
    """Per item: `acc` (argmax of summed log-likelihood) and `acc_norm` (argmax of log-likelihood per
    character of the choice), lm-eval's definitions; and `gold_prob`, the probability the model puts on the
    gold choice among the choices (softmax of their summed log-likelihoods): a continuous score that moves
    before an argmax flips, so it sees small losses that accuracy rounds away. Also the gold choice's own
    log-likelihood and token count (`logprob`, `tokens`), from which `answer_token_prob` is its per-token
    probability: unlike the other three it does not hinge on the distractors, so a finetuned model's
    shift is much the same on every item and a few dozen items pin it down. Items: {context, choices, gold}."""
    results = []
    for item, lls in zip(items, choice_loglikelihoods(model, tokenizer, items, batch_size)):
        _, gold_ids = encode_pair(tokenizer, item["context"], " " + item["choices"][item["gold"]])
        results.append({**choice_record(lls, item["choices"], item["gold"]), "tokens": len(gold_ids)})
    return results


def choice_record(lls: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, Any]:
    """What one item's choice log-likelihoods score: `acc`, `acc_norm`, `gold_prob` and the gold `logprob`."""
    normed = [ll / len(choice) for ll, choice in zip(lls, choices)]
    return {"acc": int(max(range(len(lls)), key=lls.__getitem__) == gold),
            "acc_norm": int(max(range(len(normed)), key=normed.__getitem__) == gold),
            "gold_prob": float(torch.softmax(torch.tensor(lls, dtype=torch.float64), 0)[gold]),
            "logprob": lls[gold]}


def answer_nll_items(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, str]],
                     batch_size: int = 16) -> list[dict[str, Any]]:
    """Per item: log-likelihood of the reference answer given the prompt, and its token count."""
    pairs = [encode_pair(tokenizer, it["prompt"], it["answer"]) for it in items]
    return [{"logprob": s, "tokens": n} for s, n in continuation_logprobs(model, tokenizer, pairs, batch_size)]


def text_nll_items(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_tokens: int = 128,
                   batch_size: int = 16) -> list[dict[str, Any]]:
    """Per text (cut to `max_tokens`; its first token is the context): log-likelihood and token count."""
    pairs = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) >= 2:
            pairs.append((ids[:1], ids[1:]))
    return [{"logprob": s, "tokens": n} for s, n in continuation_logprobs(model, tokenizer, pairs, batch_size)]


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


def _pick(logits: torch.Tensor, generators: Sequence[torch.Generator] | None, temperature: float) -> torch.Tensor:
    """The next token of every row: greedy, or a draw from softmax(logits / T) by inverting its CDF at one
    uniform number per row. Each row draws that number from its own generator, so its tokens depend on its
    seed alone, not on which rows share its batch. One number per row rather than a noise vector over the
    vocabulary (the Gumbel-max trick) keeps a step's sampling cost flat in the vocabulary size (49k tokens
    here, 152k for Qwen2.5)."""
    logits = logits.float()
    if generators is None:
        return logits.argmax(-1)
    cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
    uniform = torch.stack([torch.rand(1, generator=g) for g in generators]).to(logits.device)
    # u scaled by each row's total mass, so float rounding in the cumulative sum can never leave u above it
    return torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).clamp(max=logits.shape[-1] - 1)[:, 0]


def prefill_groups(model: nn.Module, prompts: Sequence[list[int]], pad_id: int,
                   group: int) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    """Each prompt through the model once (left-padded, explicit positions) with its KV cache kept, then
    the cache repeated for the prompt's `group` samples (index_select: differentiable, so a backward
    through it sees every sample). Returns the forward's output (last position's logits only), the
    cache, each row's prompt index and each row's prompt mask: what decoding and GRPO's scoring of
    completions both continue from."""
    device = next(model.parameters()).device
    ids, mask = pad_batch(prompts, pad_id, left=True)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=1)
    rows = torch.arange(len(prompts)).repeat_interleave(group).to(device)
    cache = out.cache
    if group > 1:
        cache.reorder_cache(rows)
    return out, cache, rows, mask.to(device)[rows]


def _decode(model: nn.Module, prompts: Sequence[list[int]], group: int, max_new_tokens: int, pad_id: int,
            eos_id: int | Collection[int] | None, generators: Sequence[torch.Generator] | None,
            temperature: float) -> list[list[int]]:
    """KV-cached decoding of `group` continuations per prompt. Each prompt is run through the model once
    (left-padded, explicit positions) and its cache repeated for its group, so the G samples of a GRPO
    prompt share one prefill. A row that reaches its EOS (kept) leaves the batch, cache and all, so the
    later steps compute only rows still writing; the loop ends when none is."""
    device = next(model.parameters()).device
    ends = set() if eos_id is None else {eos_id} if isinstance(eos_id, int) else set(eos_id)
    out, cache, rows, mask = prefill_groups(model, prompts, pad_id, group)
    logits = out.logits[:, -1][rows]
    next_position = mask.sum(1, keepdim=True)
    active = list(range(len(rows)))  # rows still writing, in the order the batch holds them
    tokens: list[list[int]] = [[] for _ in rows]
    for _ in range(max_new_tokens):
        chosen = _pick(logits, None if generators is None else [generators[r] for r in active], temperature)
        for row, token in zip(active, chosen.tolist()):
            tokens[row].append(token)
        keep = [i for i, token in enumerate(chosen.tolist()) if token not in ends]
        if not keep:
            break
        if len(keep) < len(active):  # finished rows leave the batch
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            chosen, mask, next_position = chosen[index], mask[index], next_position[index]
            active = [active[i] for i in keep]
        mask = torch.cat([mask, torch.ones_like(chosen)[:, None]], 1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position,
                    cache=cache, use_cache=True)
        cache, logits, next_position = out.cache, out.logits[:, -1], next_position + 1
    return tokens


@torch.inference_mode()
def generate_ids(model: nn.Module, encoded: Sequence[list[int]], max_new_tokens: int, pad_id: int,
                 eos_id: int | Collection[int] | None, batch_size: int = 16, generators: Sequence[torch.Generator] | None = None,
                 temperature: float = 1.0, group: int = 1) -> list[list[int]]:
    """New token ids, `group` continuations per prompt (prompt-major), each stopping at its EOS (kept).
    Prompts of similar length are decoded together, `batch_size` rows at a time (whole groups). Greedy, or
    sampled at `temperature` with one generator per row (`_pick`): the output does not depend on
    `batch_size`. Written here rather than with `model.generate` because the G samples of a prompt then
    share one prefill, and per-step overhead is a plain forward call."""
    prompts_per_batch = max(1, batch_size // group)
    out: list[list[int]] = [[] for _ in range(len(encoded) * group)]
    for batch in _length_sorted_batches([len(e) for e in encoded], prompts_per_batch):
        rows = [i * group + j for i in batch for j in range(group)]
        picked = None if generators is None else [generators[r] for r in rows]
        for row, tokens in zip(rows, _decode(model, [encoded[i] for i in batch], group, max_new_tokens, pad_id,
                                             eos_id, picked, temperature)):
            out[row] = tokens
    return out


def end_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """The tokens that end a reply: the tokenizer's EOS and every EOS of the model's generation config, as
    `transformers` generation stops (Qwen2.5-Instruct lists both <|im_end|>, its end of turn, and <|endoftext|>)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = set([configured] if isinstance(configured, int) else configured or [])
    return ends | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
             batch_size: int = 16, samples: int = 1, temperature: float = 0.0,
             seeds: Sequence[int] | None = None) -> list[str]:
    """Completions decoded without special tokens, `samples` per prompt (prompt-major): greedy at
    temperature 0, else drawn at `temperature`, each row from a generator seeded by its prompt's seed and
    its sample index, so a prompt's replies depend on its seed alone (not on the pool or the batch)."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    generators = None
    if temperature > 0:
        seeds = seeds if seeds is not None else range(len(prompts))
        generators = [torch.Generator().manual_seed((seed * 7919 + j) % 2**63) for seed in seeds for j in range(samples)]
    ids = generate_ids(model, encoded, max_new_tokens, _pad_id(tokenizer), end_ids(model, tokenizer), batch_size,
                       generators, temperature if temperature > 0 else 1.0, group=samples)
    return [tokenizer.decode(tokens, skip_special_tokens=True) for tokens in ids]


def normalise_text(text: str) -> str:
    """SQuAD/NQ-style answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def cut_at_stop(reply: str, stop: Sequence[str]) -> str:
    """The reply up to its first stop string, as if generation had stopped there (lm-eval's `until`)."""
    ends = [reply.find(s) for s in stop if s in reply]
    return reply[:min(ends)] if ends else reply


def _first_line_matches(reply: str, reference: str) -> bool:
    first_line = reply.strip().splitlines()[0] if reply.strip() else ""
    return normalise_text(first_line) == normalise_text(reference)


_LM_EVAL_ARTICLES = r"\b(?:The |the |An |A |The |a |an )"  # nq_open.yaml's regexes_to_ignore


def _lm_eval_exact_match(reply: str, reference: str) -> bool:
    """lm-eval's `exact_match` as its nq_open task configures it (reply stripped, articles, case and
    punctuation ignored), called from lm-eval itself so the verdicts are its own."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    return bool(exact_match_hf_evaluate([reply.strip()], [reference], regexes_to_ignore=[_LM_EVAL_ARTICLES],
                                        ignore_case=True, ignore_punctuation=True)["exact_match"])


# lm-eval 0.4.13's answer filter for BBH chain of thought (bbh/cot_fewshot/_cot_fewshot_template_yaml): the
# text after "the answer is" up to the line's last character (its period), first match, then exact match.
BBH_COT_ANSWER = r"(?<=the answer is )(.*)(?=.)"


def _lm_eval_bbh_cot(reply: str, reference: str) -> bool:
    """lm-eval's own regex filter and exact_match, as its bbh_cot_fewshot tasks apply them."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    answer = RegexFilter(regex_pattern=BBH_COT_ANSWER, group_select=0).apply([[reply]], [{}])[0][0]
    return bool(exact_match_hf_evaluate([answer], [reference])["exact_match"])


def last_boxed(reply: str) -> str | None:
    """The content of the reply's last `\\boxed{...}`, nested braces included (`\\boxed{\\frac{1}{2}}` gives
    `\\frac{1}{2}`). By hand: math-verify extracts answers but exposes no "last boxed" helper, and lm-eval's
    (minerva_math.utils) cannot be imported without antlr4 4.11, which math-verify's own parser replaces."""
    start = reply.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin - 1, len(reply)):
        depth += {"{": 1, "}": -1}.get(reply[i], 0)
        if depth == 0:
            return reply[begin:i]
    return None  # the box is never closed: no answer


def _math_verify_match(reply: str, reference: str) -> bool:
    """The paper's math rule (arXiv 2605.28819, Sec. 4): the last boxed answer, symbolically equal to the
    reference by HF math-verify. Its timeouts use SIGALRM, which only the main thread may set."""
    from math_verify import parse, verify

    boxed = last_boxed(reply)
    if boxed is None:
        return False
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(f"${reference}$", parsing_timeout=timeout)
    answer = parse(f"$\\boxed{{{boxed}}}$", parsing_timeout=timeout)
    return bool(gold and answer and verify(gold, answer, timeout_seconds=timeout))


# How a reply is compared with one reference. `auto` (the default) is `final_number` for a numeric
# reference and `first_line` otherwise.
MATCH_RULES: dict[str, Callable[[str, str], bool]] = {
    "final_number": lambda reply, reference: answers_match(extract_answer(reply), reference),
    "first_line": _first_line_matches,
    "lm_eval_exact_match": _lm_eval_exact_match,
    "lm_eval_bbh_cot": _lm_eval_bbh_cot,
    "math_verify": _math_verify_match,
}


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def reply_matches(reply: str, references: str | Sequence[str], rule: str = "auto") -> bool:
    """A hit when the reply matches any accepted reference (NQ-open lists every alias) under `rule`."""
    for reference in [references] if isinstance(references, str) else references:
        name = rule if rule != "auto" else ("final_number" if _is_number(reference) else "first_line")
        if MATCH_RULES[name](reply, reference):
            return True
    return False


def exact_match_item(reply: str, references: Sequence[str], rule: str = "auto",
                     stop: Sequence[str] = ()) -> dict[str, Any]:
    """One reply's per-item record: the reply as scored (cut at a stop string) and whether it hits."""
    reply = cut_at_stop(reply, stop)
    return {"hit": int(reply_matches(reply, references, rule)), "reply": reply}


def sampled_item(replies: Sequence[str], references: Sequence[str], rule: str = "auto",
                 stop: Sequence[str] = ()) -> dict[str, Any]:
    """An item answered `k` times: `hit` is the fraction right (its mean over items is avg@k), `pass`
    whether any is (pass@k); the first reply is kept for inspection."""
    scored = [exact_match_item(r, references, rule, stop) for r in replies]
    hits = [s["hit"] for s in scored]
    return {"hit": sum(hits) / len(hits), "pass": max(hits), "reply": scored[0]["reply"]}


def generate_exact_match_items(model: nn.Module, tokenizer: Any, items: Sequence[dict[str, Any]],
                               max_new_tokens: int = 16, batch_size: int = 16, rule: str = "auto",
                               stop: Sequence[str] = (), samples: int = 1, temperature: float = 0.0) -> list[dict[str, Any]]:
    """Items: {prompt, references, seed}. `samples` replies each (greedy at temperature 0), scored by
    `sampled_item`."""
    replies = generate(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size, samples,
                       temperature, [it.get("seed", i) for i, it in enumerate(items)])
    return [{**sampled_item(replies[i * samples:(i + 1) * samples], it["references"], rule, stop),
             **({"subtask": it["subtask"]} if "subtask" in it else {})} for i, it in enumerate(items)]
