"""The trainer's log-probs: chunked over the vocabulary, packed or padded, by rollouts or by a token budget, in
float32 or bf16, against the straightforward full-logits computation."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tests.fixtures import TRAIN
from twogrpo import grpo
from twogrpo.forward import Forward, balanced_partitions, collate, frozen_logprobs, kl_to_base, logprobs
from twogrpo.sampling import Samples
from twogrpo.trainer import Learner, Scored, update_minibatch

VOCAB = 1000


def full_logits_logprobs(model, input_ids, attention_mask, response_start, width):
    """The reference: every position's full-vocabulary logits at once, then each row's response window."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # [N, L-1, V]
    index = (response_start - 1).unsqueeze(1) + torch.arange(width).unsqueeze(0)
    index = index.clamp(max=logits.shape[1] - 1)
    logits = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = input_ids.gather(1, (index + 1).clamp(max=input_ids.shape[1] - 1))
    return logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def tiny_model(vocab: int = VOCAB, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=128, max_position_embeddings=256,
                                        tie_word_embeddings=True))


def rollouts(n: int = 6, seed: int = 0) -> Samples:
    """n rollouts of unequal prompt and response lengths (token ids >= 1; 0 pads)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n, 2), generator=gen).tolist()
    prompts = [torch.randint(1, VOCAB, (p,), generator=gen).tolist() for p, _ in lengths]
    responses = [torch.randint(1, VOCAB, (r,), generator=gen).tolist() for _, r in lengths]
    return Samples(prompts, responses, [""] * n, [False] * n)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(grpo, "LOGIT_CHUNK_ELEMENTS", 5 * VOCAB)  # 5 tokens' logits at a time: many chunks


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_logprobs_and_gradients_equal_the_full_logits_ones(small_chunks, packed):
    samples, rows = rollouts(), list(range(6))
    model, reference = tiny_model(), tiny_model()
    padded = collate(samples, rows, 0, torch.device("cpu"))
    start = torch.tensor([len(samples.prompt_ids[i]) for i in rows])
    expected, expected_entropy = full_logits_logprobs(reference, padded.input_ids, padded.attention_mask, start,
                                                      padded.width)
    batch = collate(samples, rows, 0, torch.device("cpu"), packed=packed)
    logp, entropy = logprobs(model, batch, entropy_grad=True)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(logp[mask], expected[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[mask], expected_entropy[mask], atol=1e-5, rtol=0)
    ((logp + 0.1 * entropy) * batch.response_mask).sum().backward()
    ((expected + 0.1 * expected_entropy) * padded.response_mask).sum().backward()
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_entropy_carries_a_gradient_only_when_it_is_in_the_loss(small_chunks):
    batch = collate(rollouts(), list(range(6)), 0, torch.device("cpu"))
    model = tiny_model()
    logp, entropy = logprobs(model, batch)
    assert logp.requires_grad and not entropy.requires_grad
    assert logprobs(model, batch, entropy_grad=True)[1].requires_grad


def test_balanced_partitions_cover_every_item_once_within_one_item_of_even():
    gen = np.random.default_rng(1)
    for _ in range(500):
        n = int(gen.integers(1, 40))
        k = int(gen.integers(1, n + 1))
        lengths = gen.integers(1, 200, n).tolist()
        parts = balanced_partitions(lengths, k)
        assert len(parts) == k and all(parts)
        assert sorted(i for part in parts for i in part) == list(range(n))
        totals = [sum(lengths[i] for i in part) for part in parts]
        assert max(totals) - min(totals) <= max(lengths)
    assert balanced_partitions([5, 4, 3, 3, 3, 2], 3) == [[0, 5], [1, 4], [2, 3]]  # 7, 7, 6
    with pytest.raises(ValueError, match="3 items cannot make 4"):
        balanced_partitions([1, 2, 3], 4)


def test_a_token_budget_makes_verls_count_of_micro_batches_by_rollouts_otherwise():
    samples = rollouts(8)
    lengths = [len(p) + len(r) for p, r in zip(samples.prompt_ids, samples.response_ids, strict=True)]
    for budget in (20, 35, 10_000, 1):
        parts = Forward(rollouts=2, tokens=budget).split(samples, list(range(8)))
        assert len(parts) == min(8, math.ceil(sum(lengths) / budget))  # verl: ceil(tokens / budget), <= rollouts
        assert sorted(i for part in parts for i in part) == list(range(8))
    assert Forward(rollouts=3).split(samples, list(range(8))) == [[0, 1, 2], [3, 4, 5], [6, 7]]


def math_like_rollouts(n: int, seed: int) -> Samples:
    """Lengths like a 1.5B math model's on MATH (an assumption, for the weighting test): prompts of 60-250 tokens,
    responses log-normal around 500 tokens (sigma 0.7), 30 to 4,096."""
    gen = np.random.default_rng(seed)
    prompts = gen.integers(60, 250, n)
    responses = np.clip(gen.lognormal(np.log(500), 0.7, n), 30, 4096).astype(int)
    return Samples([[1] * int(p) for p in prompts], [[1] * int(r) for r in responses], [""] * n, [False] * n)


def weight_of_short_and_long_halves(samples: Samples, parts: list[list[int]]) -> tuple[float, float]:
    """Under micro-token-mean a token of micro-batch j weighs (rows_j / N) / tokens_j; relative to token-mean's
    1 / all tokens, averaged over the tokens of the shorter and of the longer half of the rollouts."""
    responses = np.array([len(r) for r in samples.response_ids])
    weight = np.zeros(len(responses))
    for part in parts:
        weight[part] = len(part) / len(responses) / responses[part].sum() * responses.sum()
    order = np.argsort(responses, kind="stable")
    halves = order[: len(order) // 2], order[len(order) // 2:]
    return tuple(float((weight[h] * responses[h]).sum() / responses[h].sum()) for h in halves)


@pytest.mark.parametrize("n", [64, 512])  # one rank's mini-batch at 8 GPUs (32 prompts x 16), and one GPU's
def test_under_micro_token_mean_balanced_micro_batches_weigh_tokens_as_token_mean(n):
    """verl's balanced cut mixes long and short rollouts in every micro-batch, so micro-token-mean weighs the short
    and the long half's tokens within 5% of token-mean (a longest-first cut gives about 2.0 / 0.68 here: the
    weighting of seq-mean-token-mean)."""
    for seed in range(3):
        samples = math_like_rollouts(n, seed)
        parts = Forward(rollouts=8, tokens=16_384).split(samples, list(range(n)))
        short, long = weight_of_short_and_long_halves(samples, parts)
        assert abs(short - 1) < 0.05 and abs(long - 1) < 0.05, (short, long)
        one_each = weight_of_short_and_long_halves(samples, [[i] for i in range(n)])  # seq-mean-token-mean
        assert one_each[0] > 1.5  # the measure can tell a skewed weighting


def test_micro_batches_by_token_budget_give_the_update_of_micro_batches_by_rollouts():
    """Under the mini-batch-wide normalisation, how rollouts are cut into micro-batches (and packing) is
    result-neutral: the weights after one optimizer step agree to float rounding. (SGD: AdamW's first step divides
    each gradient by its own size, which turns rounding noise in near-zero gradients into whole steps.)"""
    samples = rollouts(8)
    advantages = torch.tensor([0.7, -0.7, 1.0, -1.0, 0.5, -0.5, 0.2, -0.2])
    old = frozen_logprobs(tiny_model(), samples, Forward(8), 0)
    weights = []
    for forward in (dict(micro_batch_rollouts=8), dict(micro_batch_rollouts=1), dict(micro_batch_tokens=25),
                    dict(micro_batch_tokens=10_000)):
        model = tiny_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        learner = Learner(model, optimizer, dataclasses.replace(TRAIN, **forward), horizon=8, pad=0)
        update_minibatch(learner, Scored(samples, advantages, old), list(range(8)))
        weights.append(model.state_dict())
    for other in weights[1:]:
        for name, value in weights[0].items():
            torch.testing.assert_close(other[name], value, atol=1e-6, rtol=1e-5)


def test_under_micro_token_mean_the_micro_batch_size_shapes_the_update():
    """verl's paper-time normalisation: one micro-batch per mini-batch gives the token-mean update, one rollout per
    micro-batch the seq-mean-token-mean update (rollouts here differ in length, so the two differ)."""
    samples = rollouts(8)
    assert len({len(r) for r in samples.response_ids}) > 1
    advantages = torch.tensor([0.7, -0.7, 1.0, -1.0, 0.5, -0.5, 0.2, -0.2])
    old = frozen_logprobs(tiny_model(), samples, Forward(8), 0)

    def step(**settings):
        model = tiny_model()
        learner = Learner(model, torch.optim.SGD(model.parameters(), lr=1.0), dataclasses.replace(TRAIN, **settings),
                          horizon=8, pad=0)
        update_minibatch(learner, Scored(samples, advantages, old), list(range(8)))
        return model.state_dict()

    def close(a, b):
        return all(torch.allclose(a[n], b[n], atol=1e-6, rtol=1e-5) for n in a)

    whole, singles = (step(loss_agg="micro-token-mean", micro_batch_rollouts=n) for n in (8, 1))
    assert close(whole, step(loss_agg="token-mean", micro_batch_rollouts=1))
    assert close(singles, step(loss_agg="seq-mean-token-mean", micro_batch_rollouts=8))
    assert not close(whole, singles)


def test_a_micro_batch_padded_in_several_passes_keeps_its_weight_under_micro_token_mean(monkeypatch):
    """Right-padded, a balanced micro-batch runs in passes within the budget, each normalised by the whole
    micro-batch: the update is that of the micro-batches run whole (packed), to float rounding."""
    samples = rollouts(8)
    advantages = torch.tensor([0.7, -0.7, 1.0, -1.0, 0.5, -0.5, 0.2, -0.2])
    old = frozen_logprobs(tiny_model(), samples, Forward(8), 0)
    cfg = dataclasses.replace(TRAIN, loss_agg="micro-token-mean", skip_dead_groups=False, micro_batch_tokens=25)
    forward = Forward.of(cfg)
    assert any(len(forward.passes(samples, part, packed=False)) > 1 for part in forward.split(samples, list(range(8))))
    weights = []
    for packed in (False, True):
        monkeypatch.setattr("twogrpo.trainer.packs", lambda model, packed=packed: packed)
        model = tiny_model()
        learner = Learner(model, torch.optim.SGD(model.parameters(), lr=1.0), cfg, horizon=8, pad=0)
        update_minibatch(learner, Scored(samples, advantages, old), list(range(8)))
        weights.append(model.state_dict())
    for name, value in weights[1].items():
        torch.testing.assert_close(weights[0][name], value, atol=1e-6, rtol=1e-5)


def test_bf16_computes_in_bf16_and_keeps_float32_weights_and_optimizer_state():
    samples = rollouts(4)
    model = tiny_model()
    cfg = dataclasses.replace(TRAIN, precision="bfloat16", micro_batch_rollouts=4)
    old32 = frozen_logprobs(model, samples, Forward(4), 0)
    old16 = frozen_logprobs(model, samples, Forward.of(cfg), 0)
    mask = collate(samples, list(range(4)), 0, torch.device("cpu")).response_mask.bool()
    gap = (old32 - old16)[mask].abs().max()
    assert 0 < gap < 0.5  # bf16 rounding: close to float32, not equal
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    update_minibatch(Learner(model, optimizer, cfg, horizon=8, pad=0),
                     Scored(samples, torch.tensor([1.0, -1.0, 0.5, -0.5]), old16), list(range(4)))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for state in optimizer.state.values() for v in state.values()
               if v.is_floating_point() and v.dim())


@pytest.mark.parametrize("forward", [Forward(rollouts=2), Forward(rollouts=8, tokens=24)])
def test_the_kl_to_the_base_is_the_full_vocabulary_kl_at_each_response_state(small_chunks, forward):
    samples, rows = rollouts(), list(range(6))
    policy, base = tiny_model(seed=1), tiny_model(seed=2)
    padded = collate(samples, rows, 0, torch.device("cpu"))
    start = torch.tensor([len(samples.prompt_ids[i]) for i in rows])
    index = (start - 1).unsqueeze(1) + torch.arange(padded.width).unsqueeze(0)
    with torch.no_grad():
        logp, logq = (torch.log_softmax(m(input_ids=padded.input_ids, attention_mask=padded.attention_mask)
                                        .logits.float(), -1) for m in (policy, base))
    per_state = (logp.exp() * (logp - logq)).sum(-1).gather(1, index.clamp(max=logp.shape[1] - 1))
    expected = float((per_state * padded.response_mask).sum() / padded.response_mask.sum())
    assert expected > 0.01
    assert kl_to_base(policy, base, samples, forward, 0) == pytest.approx(expected, rel=1e-5)
    assert kl_to_base(base, base, samples, forward, 0) == 0.0  # the same weights: the same computation
