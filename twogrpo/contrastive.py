"""The contrastive view, measured (paper Prop. 4.1 and v3 Table 2): the covariance between the gradients of a
prompt's positive and negative rollouts, against positives and negatives of different prompts.

g = grad log pi(o | q), the sequence log-likelihood's gradient over all parameters. For prompts whose sampled
responses are both right and wrong, with mu+ and mu- the mean positive and negative gradients,
    Cov(g+, g-) = mean over same-prompt pairs (i+, j-) of (g+_i - mu+) . (g-_j - mu-),
and Cov_perm the same over pairs whose negative comes from another prompt (a random derangement of the prompts).
Rollouts of one prompt are independent given the prompt, so by the law of total covariance Cov(g+, g-) is the
covariance of the per-prompt mean gradients: positive when a prompt's right and wrong answers share gradient
directions, which is what makes g+ - g- a low-variance (control-variate) estimate. The correlations divide by
sqrt(Var g+ Var g-) and do not depend on the number of parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twogrpo.engine import HFEngine
from twogrpo.grading import Grader, grade
from twogrpo.policy import render_prompts
from twogrpo.sampling import Sampling


def sequence_gradient(model, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """Flattened grad over all parameters of sum_t log p(response_t | prompt, response_<t)."""
    model.zero_grad(set_to_none=True)
    ids = torch.tensor([prompt_ids + response_ids], device=model.device)
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt_ids):].unsqueeze(-1)).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


class TooFewMixedPrompts(ValueError):
    """Fewer than two prompts drew both a right and a wrong response: nothing to measure."""


def gradient_covariance(model, tokenizer, problems: pd.DataFrame, template: str, sampling: Sampling, seed: int,
                        permutations: int, grader: Grader = "math-verify") -> dict[str, float]:
    """Cov(g+, g-) for same-prompt pairs and for permuted pairs, with the correlations, over `problems` (a rollout is
    positive when `grader` finds it right)."""
    prompts = render_prompts(tokenizer, problems["problem"].tolist(), template)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        samples = HFEngine(model, tokenizer).generate(prompts, sampling)
    n = sampling.n
    model.eval()
    sums = {+1: [], -1: []}  # per mixed prompt: the sum of its positive (negative) gradients
    counts = {+1: [], -1: []}
    square_norms = {+1: 0.0, -1: 0.0}
    for q, gold in enumerate(problems["answer"]):
        rows = range(q * n, (q + 1) * n)
        signs = [+1 if grade(gold, samples.texts[i], grader).correct else -1 for i in rows]
        if len(set(signs)) < 2:
            continue  # all right or all wrong: no pair (a discarded group in GRPO)
        total = {+1: 0.0, -1: 0.0}
        for i, sign in zip(rows, signs, strict=True):
            g = sequence_gradient(model, samples.prompt_ids[i], samples.response_ids[i])
            total[sign] = total[sign] + g
            square_norms[sign] += float(g @ g)
        for sign in (+1, -1):
            sums[sign].append(total[sign])
            counts[sign].append(signs.count(sign))
    m = len(counts[+1])
    if m < 2:
        raise TooFewMixedPrompts(f"only {m} of {len(problems)} prompts had both right and wrong responses; "
                                 f"need 2 or more")
    S = {s: torch.stack(sums[s]) for s in (+1, -1)}  # [m, D]
    c = {s: torch.tensor(counts[s], dtype=torch.float64) for s in (+1, -1)}  # [m]
    mu = {s: S[s].sum(0) / c[s].sum() for s in (+1, -1)}
    C = {s: (S[s] - c[s].unsqueeze(1).float() * mu[s]).double() for s in (+1, -1)}  # centred per-prompt sums
    var = {s: (square_norms[s] - float(c[s].sum()) * float(mu[s] @ mu[s])) / float(c[s].sum()) for s in (+1, -1)}
    scale = (var[+1] * var[-1]) ** 0.5

    def covariance(order: np.ndarray) -> float:
        return float((C[+1] * C[-1][order]).sum() / (c[+1] * c[-1][order]).sum())

    rng = np.random.default_rng(seed)
    perm = []
    while len(perm) < permutations:
        order = rng.permutation(m)
        if (order != np.arange(m)).all():  # a derangement: every negative from another prompt
            perm.append(covariance(order))
    same = covariance(np.arange(m))
    return {"prompts": len(problems), "responses_per_prompt": n, "mixed_prompts": m,
            "cov_same_prompt": same, "cov_permuted": float(np.mean(perm)), "cov_permuted_std": float(np.std(perm)),
            "corr_same_prompt": same / scale, "corr_permuted": float(np.mean(perm)) / scale,
            "var_positive": var[+1], "var_negative": var[-1]}
