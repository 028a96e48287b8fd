"""The GRPO objective on hand-computed cases (verl semantics)."""

import functools
import math

import numpy as np
import pytest
import torch

from twogrpo import grpo


def test_mixed_pair_gets_plus_minus_one_over_sqrt_two_with_bessel_std():
    adv = grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2, eps=1e-6)
    expected = 1 / math.sqrt(2) / (1 + 1e-6 * math.sqrt(2))  # (r - 0.5) / (0.7071 + eps)
    assert adv.tolist() == pytest.approx([expected, -expected, -expected, expected], rel=1e-6)


@pytest.mark.parametrize("rewards", [[1.0, 1.0], [0.0, 0.0], [1.0] * 16, [0.0] * 16])
def test_equal_rewards_give_zero_advantage_and_a_dead_group(rewards):
    g = len(rewards)
    r = torch.tensor(rewards)
    assert grpo.group_advantages(r, g, 1e-6).tolist() == [0.0] * g
    assert grpo.dead_groups(r, g).tolist() == [True]


def test_group_of_sixteen_matches_numpy_bessel_std():
    rng = np.random.default_rng(0)
    r = rng.integers(0, 2, size=32).astype(np.float32)
    r[:2] = [0, 1]  # both groups mixed
    r[16:18] = [0, 1]
    adv = grpo.group_advantages(torch.tensor(r), 16, 1e-6).numpy()
    groups = r.reshape(2, 16)
    expected = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(adv, expected.reshape(-1), rtol=1e-5)
    # 4 of 16 correct: A+ = (1 - 0.25) / sqrt(p (1 - p) * 16/15), the Bessel-corrected std
    one = torch.tensor([1.0] * 4 + [0.0] * 12)
    expected = 0.75 / math.sqrt(0.25 * 0.75 * 16 / 15)
    assert grpo.group_advantages(one, 16, 0.0)[0].item() == pytest.approx(expected, rel=1e-6)


def test_groups_are_consecutive_rollouts():
    adv = grpo.group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, 1e-6)
    assert adv[0] > 0 > adv[1] and adv[2] == adv[3] == 0
    assert grpo.dead_groups(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2).tolist() == [False, True]


def test_loss_hand_computed_with_clipping_on_both_sides_and_dual_clip():
    # ratios e^(logp - old): 1.5 (above 1 + 0.28), 0.5 (below 1 - 0.2), 1.1 (inside), 5.0 (dual clip region)
    ratio = torch.tensor([[1.5, 0.5, 1.1, 5.0]])
    old = torch.zeros(1, 4)
    logp = ratio.log()
    # Positive advantage: min(r A, clip(r) A) -> loss -A * min(r, clip(r))
    loss, clipped = grpo.policy_loss_terms(logp, old, torch.tensor([2.0]), 0.2, 0.28, 3.0)
    assert loss[0].tolist() == pytest.approx([-2 * 1.28, -2 * 0.5, -2 * 1.1, -2 * 1.28], rel=1e-5)
    assert clipped["high"][0].tolist() == [True, False, False, True]
    assert not clipped["low"].any() and not clipped["dual"].any()
    # Negative advantage: loss = max(-A r, -A clip(r)) = |A| max(r, clip(r)), then capped at |A| * c = 3 |A|
    loss, clipped = grpo.policy_loss_terms(logp, old, torch.tensor([-1.0]), 0.2, 0.28, 3.0)
    assert loss[0].tolist() == pytest.approx([1.5, 0.8, 1.1, 3.0], rel=1e-5)
    assert clipped["low"][0].tolist() == [False, True, False, False]
    assert clipped["dual"][0].tolist() == [False, False, False, True]
    assert not clipped["high"].any()


def test_gradient_is_zero_where_clipped_and_nonzero_inside():
    logp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = grpo.policy_loss_terms(logp, torch.zeros(1, 2), torch.tensor([1.0]), 0.2, 0.28, 3.0)
    loss.sum().backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-1.1)


VALUES = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # sequence 0 has 2 tokens, sequence 1 has 1


@pytest.mark.parametrize(("mode", "expected"), [
    ("token-mean", (1 + 2 + 3) / 3),  # verl: all tokens of the mini-batch
    ("seq-mean-token-mean", ((1 + 2) / 2 + 3 / 1) / 2),  # the paper's equations
    ("seq-mean-token-sum-norm", ((1 + 2) / 4 + 3 / 4) / 2),  # Dr. GRPO, horizon 4
])
def test_aggregation_modes_hand_computed_and_split_over_micro_batches(mode, expected):
    whole = grpo.aggregate(VALUES, MASK, mode, minibatch_sequences=2, minibatch_tokens=3, horizon=4)
    assert whole.item() == pytest.approx(expected)
    parts = [grpo.aggregate(VALUES[i:i + 1], MASK[i:i + 1], mode, 2, 3, 4) for i in range(2)]
    assert sum(p.item() for p in parts) == pytest.approx(expected)


def test_micro_token_mean_is_each_micro_batch_token_mean_weighted_by_its_rows():
    """verl's actor at the paper's time: a micro-batch's token mean times its rows / the mini-batch's rows."""
    values = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0], [4.0, 6.0, 8.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # 2, 1 and 3 tokens
    micro = functools.partial(grpo.aggregate, mode="micro-token-mean", minibatch_sequences=3, minibatch_tokens=6,
                              horizon=4)
    whole = micro(values, mask)
    assert whole.item() == pytest.approx((1 + 2 + 3 + 4 + 6 + 8) / 6)  # one micro-batch: token-mean
    # Micro-batches [0, 1] (3 tokens) and [2] (3 tokens): (6/3) * 2/3 + (18/3) * 1/3.
    assert (micro(values[:2], mask[:2]) + micro(values[2:], mask[2:])).item() == pytest.approx(2 * 2 / 3 + 6 / 3)
    # Micro-batches [0] and [1, 2]: (3/2) * 1/3 + (21/4) * 2/3: the split changes the loss.
    assert (micro(values[:1], mask[:1]) + micro(values[1:], mask[1:])).item() == pytest.approx(1.5 / 3 + 5.25 * 2 / 3)
    # One row per micro-batch: the mean over sequences of their token means (seq-mean-token-mean).
    singles = sum(micro(values[i:i + 1], mask[i:i + 1]).item() for i in range(3))
    assert singles == pytest.approx(grpo.aggregate(values, mask, "seq-mean-token-mean", 3, 6, 4).item())


def test_token_mean_weights_long_sequences_more_than_seq_mean():
    """Why the aggregation matters at G=2: token-mean gives each token equal weight, seq-mean each sequence."""
    token = grpo.aggregate(VALUES, MASK, "token-mean", 2, 3, 4)
    seq = grpo.aggregate(VALUES, MASK, "seq-mean-token-mean", 2, 3, 4)
    assert token.item() < seq.item()


@pytest.mark.parametrize(("std", "pair", "four_of_sixteen"), [
    ("bessel", 1 / math.sqrt(2), 0.75 / math.sqrt(0.25 * 0.75 * 16 / 15)),
    ("population", 1.0, 0.75 / math.sqrt(0.25 * 0.75)),
    ("none", 0.5, 0.75),
])
def test_advantage_std_modes_at_g2_and_g16(std, pair, four_of_sixteen):
    adv2 = grpo.group_advantages(torch.tensor([1.0, 0.0]), 2, eps=0.0, std=std)
    assert adv2.tolist() == pytest.approx([pair, -pair], rel=1e-6)
    adv16 = grpo.group_advantages(torch.tensor([1.0] * 4 + [0.0] * 12), 16, eps=0.0, std=std)
    assert adv16[0].item() == pytest.approx(four_of_sixteen, rel=1e-6)
    assert adv16.sum().item() == pytest.approx(0.0, abs=1e-5)
    assert grpo.group_advantages(torch.tensor([1.0, 1.0]), 2, 1e-6, std).tolist() == [0.0, 0.0]


def test_two_grpo_pair_identity_with_population_std_and_sequence_mean():
    """Paper v2 Eq. 14 (§5.1): for a mixed pair, the 2-GRPO objective (population std, per-sequence mean) is
    1/2 [mean clipped term of the positive - mean clipped term of the negative]."""
    torch.manual_seed(1)
    logp = torch.randn(2, 5) * 0.3
    old = torch.zeros(2, 5)
    mask = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2])
    adv = grpo.group_advantages(torch.tensor([1.0, 0.0]), 2, eps=0.0, std="population")
    loss, _ = grpo.policy_loss_terms(logp, old, adv, 0.2, 0.28, 3.0)
    objective = -grpo.aggregate(loss, mask, "seq-mean-token-mean", 2, int(mask.sum()), 5)
    ratio = logp.exp()
    positive = torch.minimum(ratio[0], torch.tensor(1.28)).mean()  # C+_eps(rho) = min(rho, 1 + eps)
    negative = torch.maximum(ratio[1, :3], torch.tensor(0.8)).mean()  # C-_eps(rho) = max(rho, 1 - eps)
    assert objective.item() == pytest.approx(0.5 * (positive - negative).item(), rel=1e-5)


def test_low_var_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert grpo.low_var_kl(logp, logp).tolist() == [0.0, 0.0, 0.0]
    ref = torch.tensor([-1.5, -1.0, -0.5])
    x = ref - logp
    torch.testing.assert_close(grpo.low_var_kl(logp, ref), torch.exp(x) - x - 1)
    assert (grpo.low_var_kl(logp, ref)[:2] > 0).all()
