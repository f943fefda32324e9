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


def test_token_mean_weighs_a_sequence_by_its_length():
    """Two sequences with per-token losses 1 (one token) and 4, 4, 4 (three): the sequence mean is
    (1 + 4) / 2, the token mean (1 + 12) / 4."""
    logp = torch.zeros(2, 3)
    old = torch.zeros(2, 3)  # ratio 1: the per-token loss is -advantage
    adv = torch.tensor([-1.0, -4.0])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(regimes.policy_loss(logp, old, adv, mask, 0.2)) == pytest.approx(2.5)
    assert float(regimes.policy_loss(logp, old, adv, mask, 0.2, aggregate="token_mean")) == pytest.approx(3.25)


def test_minibatches_update_the_policy_several_times_per_rollout_against_its_log_probs(tiny_tokenizer):
    """minibatches=2 on 2 prompts: the first call rolls out both prompts and trains on the first; the
    second trains on the second prompt's samples against the log-probs the policy had at the rollout, so
    after an optimizer step in between its ratio is not 1 and the clip acts; the third rolls out again."""
    def reward(completion: str, accepted: list[str]) -> float:
        return float(completion.strip()[:1].isdigit())

    model = registry.wrap(build_tiny_model(len(tiny_tokenizer), seed=3), "lora", {"r": 8}, "all-linear", seed=0)
    cfg = _cfg(minibatches=2, group_size=16)
    grpo = regimes.GRPO(_prompts(tiny_tokenizer), cfg, tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id,
                        tiny_tokenizer.decode, reward)
    assert grpo.micro_batch == 1
    engine, optimizer = SimpleNamespace(module=model), torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=50.0)
    loss, first = grpo.loss(engine, torch.device("cpu"))
    assert first["clip_fraction"] == 0 and len(grpo.pending) == 1  # the policy has not moved yet
    second_part = grpo.pending[0]
    with torch.no_grad():
        at_rollout = regimes.completion_logprobs(model, second_part.prompts, 16, second_part.completions,
                                                 tiny_tokenizer.pad_token_id)[0]
    torch.testing.assert_close(second_part.old_logp, at_rollout, rtol=0, atol=0)
    assert first["zero_variance_groups"] < 1, "the test needs a group with both outcomes to move the policy"
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    _, second = grpo.loss(engine, torch.device("cpu"))
    assert second["clip_fraction"] > 0 and not grpo.pending
    assert second["reward_mean"] == first["reward_mean"]  # the same rollout
    grpo.loss(engine, torch.device("cpu"))
    assert len(grpo.pending) == 1  # a new rollout


@pytest.mark.parametrize("train, error", [
    ({"grpo": {"prompts_per_step": 6, "minibatches": 4}}, r"grpo.minibatches: 4 does not divide grpo.prompts_per_step \(6\)"),
    ({"grpo": {"prompts_per_step": 8, "minibatches": 4}, "checkpoint_every": 6},
     r"grpo.minibatches: 4 does not divide checkpoint_every x grad_accum \(6\); allowed: a divisor"),
])
def test_minibatches_that_would_split_a_rollout_are_refused(train, error):
    with pytest.raises(ValueError, match=error):
        TrainConfig(regime="grpo", **train)
