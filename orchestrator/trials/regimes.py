"""How a batch becomes a loss: supervised finetuning, or RL with verifiable rewards (GRPO).

The trainer keeps one loop (forward, backward, step, checkpoints); a regime owns its data (the seeded
order of examples or prompts) and supplies the loss of each micro-batch. GRPO follows the RLVR protocol of
PEFT-Arena (Huang et al., arXiv 2605.28819, "Benchmark protocol"): for each prompt, sample G completions
from the current policy (all prompts x G decoded together, each prompt's prefill shared by its G samples,
chunked to `grpo.rollout_chunk` rows), score them with the task's verifiable scorer, normalise rewards
within the group, and minimise the clipped policy-gradient loss over completion tokens (the prompts'
forward and backward shared by their samples too). With `grpo.minibatches` M > 1 a rollout is split into
M mini-batches of its prompts, one optimizer step each, every one scored against the log-probs the policy
had at the rollout, so from the second update on the ratio moves and the clip acts (PPO's mini-batches, as
the paper's veRL runs: 4 per rollout). No KL term
by default; with `kl_coef` > 0 the reference is the base model, which for PEFT is the same model with
adapters disabled (no second copy in memory).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from evals.scorers import generate_ids, pad_batch, prefill_groups
from orchestrator.config import TrainConfig

Reward = Callable[[str, list[str]], float]  # (completion text, accepted references) -> reward
Pair = tuple[list[int], list[int]]  # (prompt ids, answer ids)


def collate(pairs: Sequence[Pair], max_length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 on prompt and padding so the loss covers answer tokens only.
    Over-long examples lose prompt tokens from the left, never answer tokens."""
    rows = []
    for prompt, answer in pairs:
        answer = answer[:max_length]
        keep = max_length - len(answer)
        prompt = prompt[-keep:] if keep > 0 else []
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    input_ids, mask = pad_batch([ids for ids, _ in rows], pad_id)
    labels, _ = pad_batch([lab for _, lab in rows], -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def fitting(pairs: Sequence[Pair], max_length: int) -> list[Pair]:
    """The examples whose prompt and answer fit in `max_length` tokens whole (`train.overlong: drop`)."""
    kept = [(prompt, answer) for prompt, answer in pairs if len(prompt) + len(answer) <= max_length]
    if not kept:
        raise ValueError(f"train.max_length = {max_length}: every one of the {len(pairs)} training examples is longer; "
                         "allowed: a larger max_length, or train.overlong: truncate")
    return kept


def batches(items: Sequence[Any], batch_size: int, seed: int) -> Iterator[list]:
    """Endless epochs, each a fresh seeded shuffle: the same seed gives the same batches everywhere."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        for i in range(0, max(len(order) - batch_size, 0) + 1, batch_size):
            yield [items[j] for j in order[i:i + batch_size]]


class _Stream:
    """A regime's data: seeded batches that a resumed run fast-forwards past what earlier steps used, and
    whatever random state of its own an exact resume must carry (`state` / `restore`). On several ranks
    each reads its shard of the same seeded order (`shard`)."""
    stream: Iterator[list]
    micro_batch: int  # examples or prompts per micro-batch

    def shard(self, rank: int, world: int) -> None:
        """Keep micro-batches rank, rank + world, ...: with W ranks at accumulation A a step sees the micro-
        batches one rank sees at accumulation A x W (skip counts this rank's micro-batches from then on)."""
        if world > 1:
            self.stream = itertools.islice(self.stream, rank, None, world)

    def skip(self, count: int) -> None:
        for _ in range(count):
            next(self.stream)

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        del state  # nothing of its own


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group (rows of [groups, G]); a group whose rewards are all
    equal gets zero advantages, hence no gradient."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float, ref_logp: torch.Tensor | None = None, kl_coef: float = 0.0,
                aggregate: str = "sequence_mean") -> torch.Tensor:
    """Clipped surrogate over completion tokens (PPO/GRPO): the per-token mean over each sequence, then over
    the batch (`sequence_mean`), or over every token of the batch at once (`token_mean`, where a long
    completion weighs by its length). Shapes: [sequences, tokens] for log-probs and mask, [sequences] for
    advantages."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    if ref_logp is not None and kl_coef > 0:  # k3 estimator of KL(policy || reference)
        log_ratio = ref_logp - logp
        per_token = per_token + kl_coef * (torch.exp(log_ratio) - log_ratio - 1)
    if aggregate == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    per_sequence = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sequence.mean()


def completion_logprobs(model: nn.Module, prompts: Sequence[list[int]], group: int,
                        completions: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of every completion token (`group` completions per prompt, prompt-major) given its prompt
    and the tokens before it, with the policy's entropy there and the mask of real completion tokens.

    Each prompt goes through the model once (left-padded, explicit positions) and its KV cache is repeated
    for its group, gradients included; then all completions run in one pass on that cache. The G samples of
    a prompt share the prompt's forward and backward: what one forward per sample computes, at a fraction of
    the tokens. Shapes: [rows, longest completion] each, left-aligned."""
    device = next(model.parameters()).device
    first, cache, rows, mask = prefill_groups(model, prompts, pad_id, group)
    comp_ids, comp_mask = pad_batch(completions, pad_id)
    comp_ids, comp_mask = comp_ids.to(device), comp_mask.to(device)
    width = comp_ids.shape[1]
    # token t of a completion is predicted at the prompt's last position (t = 0) or at token t - 1, so the
    # last column is never an input that predicts anything read here
    scored = [_token_logprobs(first.logits[:, -1:][rows], comp_ids[:, :1])]
    if width > 1:
        comp_positions = mask.sum(1)[:, None] + torch.arange(width - 1, device=device)[None, :]
        rest = model(input_ids=comp_ids[:, :-1], attention_mask=torch.cat([mask, comp_mask[:, :-1]], 1),
                     position_ids=comp_positions, cache=cache, use_cache=True).logits
        scored.append(_token_logprobs(rest, comp_ids[:, 1:]))
    logp = torch.cat([lp for lp, _ in scored], 1)
    entropy = torch.cat([e for _, e in scored], 1)
    return logp, entropy, comp_mask.float()


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) at each position, and the distribution's entropy there (a metric: no graph)."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    detached = logp_all.detach()
    return logp_all.gather(2, targets[..., None])[..., 0], -(detached.exp() * detached).sum(-1)


class SFT(_Stream):
    """Next-token loss on answer tokens (labels are -100 elsewhere)."""

    def __init__(self, pairs: Sequence[Pair], cfg: TrainConfig, pad_id: int) -> None:
        self.stream = batches(list(pairs), cfg.batch_size, cfg.seed)
        self.cfg, self.pad_id, self.micro_batch = cfg, pad_id, cfg.batch_size

    def loss(self, engine: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        batch = {k: v.to(device) for k, v in collate(next(self.stream), self.cfg.max_length, self.pad_id).items()}
        return engine(**batch).loss, {"tokens": float(batch["attention_mask"].sum())}


@dataclass
class _MiniBatch:
    """One policy update's share of a rollout: its prompts' completions, advantages and rollout log-probs."""
    prompts: list[list[int]]
    completions: list[list[int]]
    advantages: torch.Tensor
    old_logp: torch.Tensor | None  # None: the policy has not moved since the rollout (its first update)
    metrics: dict[str, float]


@dataclass
class GRPO(_Stream):
    """Group-relative policy optimisation on prompts with verifiable answers."""
    prompts: Sequence[tuple[list[int], str]]  # (prompt ids, reference answer)
    cfg: TrainConfig
    pad_id: int
    eos_id: int | None
    decode: Callable[[list[int]], str]
    reward: Reward
    pending: deque = field(default_factory=deque)  # the current rollout's mini-batches not yet trained on

    def __post_init__(self) -> None:
        self.stream = batches(list(self.prompts), self.cfg.grpo.prompts_per_step, self.cfg.seed)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.micro_batch = self.cfg.grpo.prompts_per_step // self.cfg.grpo.minibatches

    def skip(self, count: int) -> None:
        """`count` mini-batches were trained on before the resume: whole rollouts (the config keeps every
        checkpoint between rollouts)."""
        super().skip(count // self.cfg.grpo.minibatches)

    def shard(self, rank: int, world: int) -> None:
        """Each rank samples its own prompts' completions: its generator is seeded by (seed, rank)."""
        super().shard(rank, world)
        if rank:
            self.generator.manual_seed(self.cfg.seed * 1_000_003 + rank)

    def state(self) -> dict[str, torch.Tensor]:
        return {"sampling_generator": self.generator.get_state()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["sampling_generator"])

    def _row_generators(self, prompts: int) -> list[torch.Generator]:
        """One sampling generator per completion: each prompt draws a seed from the regime's generator and
        its G samples derive theirs from it, so a completion depends on the seed alone, not on batching."""
        g = self.cfg.grpo.group_size
        seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)) for _ in range(prompts)]
        return [torch.Generator().manual_seed(seed * 65536 + j) for seed in seeds for j in range(g)]

    def loss(self, engine: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        g = self.cfg.grpo
        model = engine.module
        if not self.pending:
            self.pending.extend(self._rollout(model, device))
        part = self.pending.popleft()
        logp, entropy, mask = completion_logprobs(model, part.prompts, g.group_size, part.completions, self.pad_id)
        ref = None
        if g.kl_coef > 0 and hasattr(model, "disable_adapter"):
            with torch.no_grad(), model.disable_adapter():
                ref = completion_logprobs(model, part.prompts, g.group_size, part.completions, self.pad_id)[0]
        old = logp.detach() if part.old_logp is None else part.old_logp
        loss = policy_loss(logp, old, part.advantages, mask, g.clip_eps, ref, g.kl_coef, g.loss_agg)
        ratio = torch.exp(logp.detach() - old)
        clipped = ((ratio - 1).abs() > g.clip_eps).float()
        metrics = {**part.metrics, "entropy": float((entropy * mask).sum() / mask.sum().clamp(min=1)),
                   "clip_fraction": float((clipped * mask).sum() / mask.sum().clamp(min=1))}
        return loss, metrics

    def _rollout(self, model: nn.Module, device: torch.device) -> list[_MiniBatch]:
        """Sample G completions for each of the next prompts, reward them, and cut the rollout into
        `minibatches` parts by prompt (a prompt's group stays whole: its advantages are relative to it).
        Parts after the first keep the rollout's log-probs, which their updates' ratios are taken against."""
        g = self.cfg.grpo
        batch = next(self.stream)
        prompts = [prompt for prompt, _ in batch]
        completions = generate_ids(model, prompts, g.max_new_tokens, self.pad_id, self.eos_id,
                                   g.rollout_chunk or len(prompts) * g.group_size, self._row_generators(len(batch)),
                                   g.temperature, group=g.group_size)
        rewards = [self.reward(self.decode(c), batch[row // g.group_size][1]) for row, c in enumerate(completions)]
        reward_t = torch.tensor(rewards, dtype=torch.float32).view(len(batch), g.group_size)
        advantages = group_advantages(reward_t).view(-1).to(device)
        stds = reward_t.std(dim=1, unbiased=False)
        lengths = [len(c) for c in completions]
        metrics = {"reward_mean": float(reward_t.mean()), "reward_std_in_group": float(stds.mean()),
                   "zero_variance_groups": float((stds == 0).float().mean()),
                   "completion_length": sum(lengths) / len(lengths), "tokens": float(sum(lengths))}
        per_part, rows = len(batch) // g.minibatches, len(batch) // g.minibatches * g.group_size
        parts = []
        for k in range(g.minibatches):
            part_prompts, part_completions = prompts[k * per_part:(k + 1) * per_part], completions[k * rows:(k + 1) * rows]
            old_logp = None
            if k:
                with torch.no_grad():
                    old_logp = completion_logprobs(model, part_prompts, g.group_size, part_completions, self.pad_id)[0]
            parts.append(_MiniBatch(part_prompts, part_completions, advantages[k * rows:(k + 1) * rows], old_logp, metrics))
        return parts
