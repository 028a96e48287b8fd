"""The contrastive panel (paper v3 App. B.8, Table 2): the streaming estimator equals the definitions computed by brute
force over every pair of rollouts, with each rollout's gradient held in memory (the estimator this replaced kept
them as a [prompts, parameters] matrix)."""

import numpy as np
import pytest
import torch

from tests.fixtures import BASE
from twogrpo.contrastive import (
    ROWS,
    Group,
    Row,
    cells,
    panel,
    prompt_sums,
    rollout_gradients,
    weighted_gradient,
    weights,
)
from twogrpo.grpo import group_advantages
from twogrpo.policy import build_char_tokenizer, build_tiny_model
from twogrpo.table2 import finding_text, findings

SHIFTS, SEED = 2, 3


@pytest.fixture(scope="module")
def model():
    """In float64 (but for the norms, which Qwen2 computes in float32), so that the batched first pass and the
    per-rollout second pass agree closely."""
    return build_tiny_model(BASE, build_char_tokenizer()).double().eval()


def random_groups(seed: int, prompts: int = 6, n: int = 4) -> list[Group]:
    """Mixed groups of random tokens: prompts of 3-6 tokens, responses of 1-5, at least one right and one wrong."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(prompts):
        positive = rng.permutation([True, False, *(rng.random(n - 2) < 0.5)])
        advantages = group_advantages(torch.tensor(positive, dtype=torch.float64), n, 1e-6, "bessel").numpy()
        groups.append(Group(list(rng.integers(3, 20, rng.integers(3, 7))),
                            [list(rng.integers(3, 20, rng.integers(1, 6))) for _ in range(n)], positive, advantages))
    return groups


def one_rollout(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """A rollout's gradient g = grad log pi(o | q) from a backward pass of its own."""
    return weighted_gradient(model, [(prompt, response)], [1.0])


def each_rollout(model, group: Group) -> list[torch.Tensor]:
    return [one_rollout(model, group.prompt_ids, response) for response in group.responses]


def brute_force(model, groups: list[Group], weight: str, centred: bool, shifts: int, seed: int) -> dict:
    """Every statistic from its definition: all per-rollout vectors in memory, every pair enumerated. The gradients
    are those the panel reads (test_a_groups_per_rollout_gradients_are_each_rollouts_own checks them against a
    backward pass per rollout), so the two agree to float64's rounding."""
    vectors = [[float(w) * g for w, g in zip(weights(group, weight), rollout_gradients(model, group), strict=True)]
               for group in groups]
    side = {s: [[v for v, p in zip(vs, group.positive, strict=True) if p == s] for vs, group in
                zip(vectors, groups, strict=True)] for s in (True, False)}
    mu = {s: torch.stack([v for vs in side[s] for v in vs]).mean(0) if centred else 0.0 for s in (True, False)}
    dev = {s: [[v - mu[s] for v in vs] for vs in side[s]] for s in (True, False)}
    var = {s: np.mean([float(d @ d) for ds in dev[s] for d in ds]) for s in (True, False)}
    order = np.random.default_rng(seed).permutation(len(groups))

    def over(partner) -> tuple[float, float]:
        products, cosines = [], []
        for j, q in enumerate(order):
            r = order[partner(j) % len(groups)]
            for a in dev[True][q]:
                for b in dev[False][r]:
                    products.append(float(a @ b))
                    cosines.append(float(a @ b) / float(a.norm() * b.norm()))
        return float(np.mean(products)), float(np.mean(cosines))

    cov, cosine = over(lambda j: j)
    pairs = [(over(lambda j, k=k: j - k), sum(len(dev[True][q]) * len(dev[False][order[(j - k) % len(groups)]])
                                             for j, q in enumerate(order))) for k in range(1, shifts + 1)]
    weight_sum = sum(n for _, n in pairs)
    perm_cov = sum(c * n for (c, _), n in pairs) / weight_sum
    perm_cosine = sum(c * n for (_, c), n in pairs) / weight_sum
    means = [(torch.stack(dev[True][q]).mean(0), torch.stack(dev[False][q]).mean(0)) for q in range(len(groups))]
    counts = [len(dev[True][q]) * len(dev[False][q]) for q in range(len(groups))]
    between = sum(c * float(a @ b) for (a, b), c in zip(means, counts, strict=True)) / sum(counts)
    return {"cov": cov, "permuted_cov": perm_cov, "cosine": cosine, "permuted_cosine": perm_cosine,
            "corr": cov / np.sqrt(var[True] * var[False]), "between": between}


@pytest.mark.parametrize("row", [name for name in ROWS if ROWS[name][2] == "train"])
def test_the_streaming_panel_equals_the_brute_force_definitions(model, row):
    groups = {"train": random_groups(0), "eval": random_groups(1)}
    measured = {r["estimator"]: r for r in panel(model, groups, SHIFTS, SEED, bootstrap=10)}[row]
    weight, centred, _ = ROWS[row]
    expected = brute_force(model, groups["train"], weight, centred, SHIFTS, SEED)
    parameters = sum(p.numel() for p in model.parameters())
    assert measured["mixed_prompts"] == 6 and measured["shifts"] == SHIFTS
    for column in ("cov", "cosine", "corr", "between"):
        assert measured[column]["value"] == pytest.approx(expected[column], rel=1e-6), column
    for column in ("cov", "cosine"):
        assert measured[column]["permuted"] == pytest.approx(expected[f"permuted_{column}"], rel=1e-6), column
    assert measured["cov_per_parameter"]["value"] == pytest.approx(expected["cov"] / parameters, rel=1e-6)
    # The law of total covariance: rollouts of one prompt are drawn independently, so nothing is left within prompts.
    assert abs(measured["within"]["value"]) <= 1e-9 * abs(expected["cov"])
    for column in ("cov", "cosine", "corr"):
        cell = measured[column]
        assert cell["value_low"] <= cell["value_high"] and cell["permuted_low"] <= cell["permuted_high"]


def test_a_bootstrap_resample_is_the_statistic_of_the_prompts_it_draws(model):
    """One resample drawing prompt 0 twice and prompt 2 never: the cell equals the brute-force statistic over that
    multiset of prompts, with the pooled means held at the full sample's."""
    groups = random_groups(0)
    means = {s: torch.stack([g for group in groups for g, p in zip(each_rollout(model, group), group.positive,
                                                                     strict=True) if p == s]).mean(0)
             for s in (True, False)}
    order = np.random.default_rng(SEED).permutation(len(groups))
    row, mu = Row(len(groups), 1), torch.stack([means[True], means[False]])
    for j, q in enumerate(order):
        row.add_prompt(j, *prompt_sums(model, groups[q], ["1"], mu)[0])
    row.close()
    draws = np.ones(len(groups))
    draws[np.where(order == 0)[0][0]], draws[np.where(order == 2)[0][0]] = 2, 0
    cov = cells(row, 1, draws[None, :])["cov"]
    products, pairs = 0.0, 0
    for q in [0, 0, 1, 3, 4, 5]:
        grads = rollout_gradients(model, groups[q])  # the gradients the row read: the resampling alone is tested
        pos = [g - means[True] for g, p in zip(grads, groups[q].positive, strict=True) if p]
        neg = [g - means[False] for g, p in zip(grads, groups[q].positive, strict=True) if not p]
        products += sum(float(a @ b) for a in pos for b in neg)
        pairs += len(pos) * len(neg)
    assert cov["value_low"] == cov["value_high"] == pytest.approx(products / pairs, rel=1e-9)


@pytest.mark.parametrize(("rows_per_pass", "rollouts_per_pass"), [(1, 1), (2, 3)])
def test_fewer_rows_and_rollouts_per_pass_give_the_same_panel(model, rows_per_pass, rollouts_per_pass):
    """What fits a 1.5B model on one GPU (one row, one rollout per pass: a backward pass, no vmap) and a split that
    leaves a remainder (3 + 1 rollouts, rows 2 + 2 and 1) measure the panel of all rows and rollouts at once."""
    groups = {"train": random_groups(0), "eval": random_groups(1)}
    at_once = panel(model, groups, SHIFTS, SEED, bootstrap=10)
    split = panel(model, groups, SHIFTS, SEED, bootstrap=10, rows_per_pass=rows_per_pass,
                  rollouts_per_pass=rollouts_per_pass)
    for whole, part in zip(at_once, split, strict=True):
        assert part["estimator"] == whole["estimator"] and part["mixed_prompts"] == whole["mixed_prompts"]
        # To 1e-8 of the statistic's scale (cosines and correlations lie in [-1, 1]; a covariance's scale is
        # sqrt(var+ var-)), as a near-zero permuted value is a difference of terms of that scale.
        scale = whole["cov"]["value"] / whole["corr"]["value"]
        for column, unit in (("cov", scale), ("between", scale), ("corr", 1), ("cosine", 1)):
            for key in ("value", "permuted", "value_low", "permuted_high"):
                assert part[column][key] == pytest.approx(whole[column][key], rel=1e-6, abs=1e-8 * unit), (column,
                                                                                                       key)


def test_a_row_without_two_mixed_prompts_says_so(model):
    groups = {"train": random_groups(0), "eval": random_groups(1, prompts=1)}
    measured = panel(model, groups, SHIFTS, SEED, bootstrap=10)
    assert [row["estimator"] for row in measured] == list(ROWS)
    assert "only 1 prompts had both right and wrong" in measured[-1]["not_measured"]
    assert measured[0]["mixed_prompts"] == 6


def test_the_gradient_is_that_of_the_response_log_likelihood(model):
    """A rollout's gradient against autograd on the summed log-probabilities of the response tokens, computed apart."""
    prompt, response = [3, 4, 5], [6, 7]
    model.zero_grad(set_to_none=True)
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    (logp[2, 6] + logp[3, 7]).backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
    assert torch.allclose(one_rollout(model, prompt, response), expected, rtol=1e-6, atol=1e-9)


def test_a_groups_per_rollout_gradients_are_each_rollouts_own(model):
    """The second pass's vectorised per-sample gradients (responses of different lengths, padded on the right) equal
    each rollout's backward pass; the model keeps its attention implementation."""
    group = random_groups(2, prompts=1, n=5)[0]
    attention = model.config._attn_implementation
    together = rollout_gradients(model, group)
    assert together.shape == (5, sum(p.numel() for p in model.parameters()))
    for row, alone in zip(together, each_rollout(model, group), strict=True):
        assert float((row - alone).norm()) <= 1e-6 * float(alone.norm())
    assert model.config._attn_implementation == attention


def test_a_batched_weighted_gradient_is_the_weighted_sum_of_each_rollouts(model):
    """The first pass's batched backward over rollouts of different prompts and lengths (padded on the right) equals
    the weighted sum of the rollouts' gradients taken one at a time."""
    rollouts = [([3, 4, 5], [6, 7]), ([8, 9], [10, 11, 12, 13]), ([3, 4, 5, 6, 7], [8])]
    factors = [0.5, -2.0, 1.5]
    one_by_one = sum(w * one_rollout(model, q, o) for (q, o), w in zip(rollouts, factors, strict=True))
    # To float32's rounding: Qwen2's RMSNorm computes in float32 even in a float64 model.
    assert float((weighted_gradient(model, rollouts, factors) - one_by_one).norm()) <= 1e-6 * float(one_by_one.norm())



def test_the_claim_row_names_the_definitions_that_give_the_papers_sign_and_order():
    def row(name, low, high, permuted_high):
        cov = {"value": (low + high) / 2, "value_low": low, "value_high": high, "permuted": 0.0,
               "permuted_low": -permuted_high, "permuted_high": permuted_high}
        return {"estimator": name, "cov": cov}

    result = {
        "base": {"rows": [row("score", -3.0, -1.0, 0.5), row("GRPO surrogate", 1.0, 2.0, 0.5)]},
        "g16-s0": {"rows": [row("score", -3.0, -1.0, 0.5), row("GRPO surrogate", 0.2, 2.0, 0.5)]},  # not above
    }
    assert findings(result) == {"base": ["GRPO surrogate"], "g16-s0": []}
    assert finding_text(result) == ("depends on the definition: the paper's sign and order with GRPO surrogate on "
                                    "base; the score as written: base -, g16-s0 -")
    result["base"]["rows"][1]["cov"]["value_low"] = -1.0
    assert finding_text(result).startswith("not reproduced by any definition")
