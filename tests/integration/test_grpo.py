"""GRPO on the tiny model: equal rewards in a group give exactly zero gradient, and a few steps on a toy
verifiable task raise the policy's probability of rewarded completions (real DeepSpeed engine)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from methods import registry
from orchestrator.config import TrainConfig
from orchestrator.storage.sweep_dir import TrialDir
from orchestrator.trials import regimes, trainer
from tests.helpers import build_tiny_model


def _cfg(**grpo) -> TrainConfig:
    return TrainConfig(regime="grpo", steps=12, batch_size=1, lr=3e-2, warmup_ratio=0.0, checkpoint_every=100,
                       grpo={"group_size": 8, "prompts_per_step": 2, "max_new_tokens": 3, "temperature": 1.0, **grpo})


def _prompts(tokenizer):
    return [(tokenizer(q, add_special_tokens=False)["input_ids"], "7") for q in ("Question: 3 + 4?\nAnswer:", "Q: 5 + 2?\nA:")]


def test_equal_rewards_in_every_group_give_zero_gradient(tiny_tokenizer):
    model = registry.wrap(build_tiny_model(len(tiny_tokenizer)), "lora", {"r": 4}, "all-linear", seed=0)
    grpo = regimes.GRPO(_prompts(tiny_tokenizer), _cfg(), tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id,
                        tiny_tokenizer.decode, reward=lambda completion, answer: 1.0)
    loss, metrics = grpo.loss(SimpleNamespace(module=model), torch.device("cpu"))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(float(g.abs().max()) == 0.0 for g in grads)
    assert metrics["zero_variance_groups"] == 1.0 and metrics["reward_std_in_group"] == 0.0


def test_group_advantages_and_clipped_loss_by_hand():
    adv = regimes.group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]))
    torch.testing.assert_close(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert torch.equal(adv[1], torch.zeros(4))
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.25]]))  # ratio 2, clipped to 1.2 for a positive advantage
    loss = regimes.policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_eps=0.2)
    assert float(loss) == pytest.approx(-1.2)


def test_grpo_raises_the_probability_of_rewarded_completions(tmp_path, tiny_tokenizer):
    """Toy verifiable task: a completion earns 1 when it starts with a digit (about 9% of the untrained
    policy's first-token mass, so groups of 8 often hold both outcomes)."""
    rewarded = [i for i in range(len(tiny_tokenizer)) if tiny_tokenizer.decode([i]).strip()[:1].isdigit()]
    prompts = _prompts(tiny_tokenizer)

    def reward(completion: str, accepted: list[str]) -> float:
        return float(completion.strip()[:1].isdigit())

    def p_rewarded(model) -> float:
        with torch.no_grad():
            probs = [torch.softmax(model(input_ids=torch.tensor([p])).logits[0, -1].float(), -1) for p, _ in prompts]
        return float(sum(pr[list(rewarded)].sum() for pr in probs) / len(probs))

    model = registry.wrap(build_tiny_model(len(tiny_tokenizer), seed=3), "lora", {"r": 8}, "all-linear", seed=0)
    before = p_rewarded(model.eval())
    cfg = _cfg(temperature=1.0)
    grpo = regimes.GRPO(prompts, cfg, tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id, tiny_tokenizer.decode, reward)
    result = trainer.train(model, grpo, cfg, TrialDir(tmp_path), {"method": "lora"})
    assert result.status == "completed"
    after = p_rewarded(model.eval())
    rewards = [r["reward_mean"] for r in result.log]
    assert after > before * 1.5, (before, after, rewards)
    assert {"reward_mean", "reward_std_in_group", "zero_variance_groups", "completion_length", "entropy"} <= set(result.log[0])


def test_rollouts_are_the_same_whatever_the_chunking(tiny_tokenizer):
    """One generate call for all prompts x G, per prompt, or in odd chunks: the same completions, because
    each completion samples with its own seeded generator."""
    from evals.scorers import generate_ids

    model = build_tiny_model(len(tiny_tokenizer), seed=3).eval()
    prompts = [p for p, _ in _prompts(tiny_tokenizer) for _ in range(4)]
    outputs = []
    for chunk in (len(prompts), 4, 3, 1):
        generators = [torch.Generator().manual_seed(100 + i) for i in range(len(prompts))]
        outputs.append(generate_ids(model, prompts, 6, tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id,
                                    chunk, generators, temperature=1.0))
    assert all(out == outputs[0] for out in outputs[1:])
    assert len({tuple(c) for c in outputs[0]}) > 1  # really sampled: the G samples of a prompt differ
    unique = [p for p, _ in _prompts(tiny_tokenizer)]
    for chunk in (8, 4):  # each prompt's prefill shared by its 4 samples: the same completions again
        generators = [torch.Generator().manual_seed(100 + i) for i in range(len(prompts))]
        assert generate_ids(model, unique, 6, tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id, chunk,
                            generators, temperature=1.0, group=4) == outputs[0]


def test_greedy_generation_is_the_same_batched_or_one_by_one(tiny_tokenizer):
    from evals.scorers import generate

    model = build_tiny_model(len(tiny_tokenizer), seed=5).eval()
    prompts = ["Question: What is 12 + 7?\nAnswer:", "The capital of France is", "0 1 2", "yes no four two six six"]
    assert generate(model, tiny_tokenizer, prompts, 8, batch_size=16) == \
        [generate(model, tiny_tokenizer, [p], 8, batch_size=1)[0] for p in prompts]


def test_sampling_draws_from_the_softmax_at_temperature():
    from evals.scorers import _pick

    logits = torch.randn(1, 12, generator=torch.Generator().manual_seed(0)) * 2
    logits[0, [0, 11]] = float("-inf")  # zero probability, at an edge of the CDF's range too: never drawn
    generators = [torch.Generator().manual_seed(1)]
    draws = torch.tensor([int(_pick(logits, generators, temperature=0.7)[0]) for _ in range(40000)])
    frequencies = torch.bincount(draws, minlength=12).float() / len(draws)
    expected = torch.softmax(logits[0] / 0.7, dim=-1)
    assert (frequencies - expected).abs().max() < 0.012
    assert frequencies[0] == frequencies[11] == 0
