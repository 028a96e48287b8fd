"""The contrastive view, measured (paper Prop. 4.1 and v3 App. B.8, Table 2): how the gradients of a prompt's right
(positive) and wrong (negative) rollouts covary, against pairs whose negative comes from another prompt.

The paper writes g = grad log pi(o | q) and reports a positive Cov(g+, g-) for same-prompt pairs, far above the
permuted pairs' (its values: twogrpo.paper.paper_covariance); it does not say which gradient, sampling, normalisation
or policy. So this module measures a panel,
one row per definition, on the same prompts and rollouts (docs/objective.md gives each row's expected sign):

- score: v = g, the sequence log-likelihood's gradient over all parameters, centred at the pooled means;
- score, uncentred: the same v, the mean of v+ . v- with no centring;
- score / |o|: v = g / |o|, GRPO's length normalisation;
- GRPO surrogate: v = A (1/|o|) g, the per-rollout gradient of GRPO's surrogate at ratio 1 (A the group advantage);
- score, eval decoding: v = g of rollouts sampled at the evaluation's decoding (temperature, top-p, top-k), the
  gradient still that of log pi at temperature 1.

For a row, with mu+ and mu- the mean positive and negative vectors over every mixed prompt (0 uncentred):
    cov  = sum over same-prompt pairs (i+, j-) of (v_i - mu+) . (v_j - mu-), over the number of pairs;
    corr = cov / sqrt(var+ var-), var the mean squared distance to mu;
    cosine = the mean over the pairs of the cosine between v_i - mu+ and v_j - mu-;
    between = the covariance of the prompts' mean positive and mean negative vectors (law of total covariance),
    within = cov - between: zero, since a prompt's rollouts are drawn independently (docs/objective.md).
Each cell has its permuted baseline: the same statistic over the pairs of K cyclic shifts of a seeded random order of
the prompts (positives of the j-th prompt with negatives of the (j-k)-th, k = 1..K: each shift a derangement), and a
95% prompt-bootstrap interval (prompts resampled with their pairs; the pooled means held at the full sample's).

The estimator streams: it keeps running sums and, for the shifts, the last and the first K prompts' vectors (in host
memory), never a [prompts, parameters] matrix. Two passes over the rollouts (the first for the pooled means, the
second for the centred sums; batched backward passes for the means, a prompt's per-rollout gradients at once for the
sums), for all of a rollout set's rows together, or for fewer rows and rollouts at a time where memory is short
(contrastive.rows_per_pass, contrastive.rollouts_per_pass); twogrpo.plan.contrastive_memory counts what it holds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, grad, vmap

from twogrpo.choices import AdvStd, Grader
from twogrpo.engine import HFEngine
from twogrpo.grading import grade
from twogrpo.grpo import group_advantages
from twogrpo.policy import render_prompts
from twogrpo.sampling import Sampling

# Row name -> (per-rollout weight of g, centred, rollouts). The weight: "1", "1/|o|" or "A/|o|".
ROWS = {
    "score": ("1", True, "train"),
    "score, uncentred": ("1", False, "train"),
    "score / |o|": ("1/|o|", True, "train"),
    "GRPO surrogate": ("A/|o|", True, "train"),
    "score, eval decoding": ("1", True, "eval"),
}
COLUMNS = ("cov", "cov_per_parameter", "corr", "cosine", "between", "within")
BOOTSTRAP = 1000  # prompt resamples per interval


def right_padded(rollouts: list[tuple[list[int], list[int]]], weights: list[float]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rollouts' (prompt, response) tokens padded on the right (a causal model reads no padding before a real
    token): ids and attention mask [n, width], and [n, width - 1] with w_i where token t + 1 is a response token."""
    width = max(len(q) + len(o) for q, o in rollouts)
    ids = torch.zeros(len(rollouts), width, dtype=torch.long)
    attention = torch.zeros(len(rollouts), width, dtype=torch.long)
    response = torch.zeros(len(rollouts), width - 1)
    for i, ((q, o), w) in enumerate(zip(rollouts, weights, strict=True)):
        ids[i, :len(q) + len(o)] = torch.tensor(q + o)
        attention[i, :len(q) + len(o)] = 1
        response[i, len(q) - 1:len(q) + len(o) - 1] = w
    return ids, attention, response


def weighted_gradient(model, rollouts: list[tuple[list[int], list[int]]], weights: list[float],
                      dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Flattened grad over all parameters (in `dtype`, on `device`) of sum_i w_i log pi(o_i | q_i) for (q_i, o_i) in
    `rollouts` (prompt and response tokens), the sequence log-likelihood summed over the response tokens: one
    batched backward over the sequences padded on the right."""
    model.zero_grad(set_to_none=True)
    ids, attention, response = right_padded(rollouts, weights)
    logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits[:, :-1]
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    taken = logp.gather(-1, ids[:, 1:].to(model.device).unsqueeze(-1)).squeeze(-1)
    (taken * response.to(taken)).sum().backward()
    flat = torch.cat([p.grad.flatten() for p in model.parameters()]).to(dtype=dtype, device=device)
    model.zero_grad(set_to_none=True)
    return flat


@dataclass(frozen=True)
class Group:
    """One mixed prompt's rollouts: its tokens, which responses are right, and GRPO's advantage of each."""

    prompt_ids: list[int]
    responses: list[list[int]]
    positive: np.ndarray  # [n] bool
    advantages: np.ndarray  # [n]


def sample_groups(model, tokenizer, problems: pd.DataFrame, template: str, sampling: Sampling, seed: int,
                  grader: Grader, adv_std: AdvStd, adv_eps: float) -> list[Group]:
    """`sampling.n` responses per problem, graded; the prompts with both right and wrong ones, in problem order."""
    prompts = render_prompts(tokenizer, problems["problem"].tolist(), template)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        samples = HFEngine(model, tokenizer).generate(prompts, sampling)
    n, groups = sampling.n, []
    for q, gold in enumerate(problems["answer"]):
        rows = range(q * n, (q + 1) * n)
        positive = np.array([grade(gold, samples.texts[i], grader).correct for i in rows])
        if positive.all() or not positive.any():
            continue  # all right or all wrong: no pair (a discarded group in GRPO)
        advantages = group_advantages(torch.tensor(positive, dtype=torch.float64), n, adv_eps, adv_std).numpy()
        groups.append(Group(samples.prompt_ids[q * n], [samples.response_ids[i] for i in rows], positive,
                            advantages))
    return groups


def weights(group: Group, weight: str) -> np.ndarray:
    """Each rollout's factor on g: 1, 1/|o| or A/|o|."""
    lengths = np.array([max(len(r), 1) for r in group.responses], dtype=np.float64)
    return {"1": np.ones(len(lengths)), "1/|o|": 1 / lengths, "A/|o|": group.advantages / lengths}[weight]


def rollout_gradients(model, group: Group, index: range | None = None) -> torch.Tensor:
    """The gradients g = grad log pi(o_i | q) of the group's rollouts in `index` (default all) as a [n, parameters]
    matrix in `summing(model)`'s precision on the model's device. One rollout: a backward pass. Several: one
    vectorised pass (torch.func: vmap of grad, per-sample gradients) instead of n backward passes, over the sequences
    padded on the right (no attention mask: nothing real follows a pad); attention is eager while it runs, for vmap
    has no batching rule for the CPU's fused attention."""
    responses = [group.responses[i] for i in (index or range(len(group.responses)))]
    if len(responses) == 1:
        return weighted_gradient(model, [(group.prompt_ids, responses[0])], [1.0], summing(model),
                                 model.device).unsqueeze(0)
    names = [name for name, _ in model.named_parameters()]
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    n = len(responses)
    ids, _, response = right_padded([(group.prompt_ids, o) for o in responses], [1.0] * n)

    def log_likelihood(weights: dict, row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, weights, (row.unsqueeze(0),)).logits[0, :-1]
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        return (logp.gather(-1, row[1:].unsqueeze(-1)).squeeze(-1) * mask.to(logp)).sum()

    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0))(parameters, ids.to(model.device),
                                                                  response.to(model.device))
    finally:
        model.set_attn_implementation(attention)
    return torch.cat([grads[name].reshape(n, -1) for name in names], 1).to(summing(model))


def summing(model) -> torch.dtype:
    """The precision of the second pass's gradients and sums: the model's, at least float32. Float32 for the
    float32 models the study trains (its rounding is far below the bootstrap intervals; in float64, which doubles the
    memory traffic that bounds the pass, the base model's panel took 15 s against 9.5 s); the tests' float64 model
    sums in float64, to compare with the definitions to 1e-6."""
    return torch.promote_types(next(model.parameters()).dtype, torch.float32)


@dataclass(frozen=True)
class PromptSums:
    """One prompt's sums for one row and one sign, over its rollouts' deviations d = v - mu: of d, of the unit
    vectors d / |d|, of |d|^2, and the count."""

    centred: torch.Tensor
    unit: torch.Tensor
    square: float
    count: int

    def held(self) -> PromptSums:
        """A copy in host memory, for the sums a row keeps past their prompt (the shifts' partners)."""
        return PromptSums(self.centred.to("cpu", copy=True), self.unit.to("cpu", copy=True), self.square, self.count)


def prompt_sums(model, group: Group, weight_names: list[str], mu: torch.Tensor, rollouts_per_pass: int = 0
                ) -> list[tuple[PromptSums, PromptSums]]:
    """For each row (its weight, and its pooled means as two rows of `mu`, [2 x rows, parameters]: mu+, mu-), the
    positive and the negative PromptSums of a prompt whose rollouts have gradients g_i, with v_i = w_i g_i, taken
    `rollouts_per_pass` rollouts at a time (0: all at once). The deviations are never formed:
    |d_i|^2 = w_i^2 |g_i|^2 - 2 w_i g_i . mu + |mu|^2, and the sums are weighted sums of the g_i, accumulated in place
    ([2 x 2 x rows, parameters]: the sums of v and of v / |d|), so each pass's gradients are read three times for all
    the rows together."""
    n = len(group.responses)
    step = rollouts_per_pass or n
    sums = torch.zeros(4 * len(weight_names), mu.shape[1], dtype=mu.dtype, device=mu.device)
    mu_squares = (mu * mu).sum(1)
    norms: list[list[torch.Tensor]] = [[] for _ in range(2 * len(weight_names))]
    for first in range(0, n, step):
        index = range(first, min(first + step, n))
        gradients = rollout_gradients(model, group, index)
        squares = torch.linalg.vector_norm(gradients, dim=1) ** 2
        dots = gradients @ mu.T  # [rollouts, 2 x rows]: g_i . mu
        coefficients = []
        for r, weight in enumerate(weight_names):
            w = torch.from_numpy(weights(group, weight)[index]).to(gradients)
            for c, sign in enumerate((True, False)):
                mine = torch.from_numpy(group.positive[index] == sign).to(gradients.device)
                k = 2 * r + c
                norm = (w * w * squares - 2 * w * dots[:, k] + mu_squares[k]).clamp_min(0).sqrt()
                norms[k].append(norm[mine])
                coefficients += [w * mine, w * mine / norm.clamp_min(1e-300)]
        sums.addmm_(torch.stack(coefficients), gradients)
        del gradients
    out = []
    for k, parts in enumerate(norms):
        norm = torch.cat(parts)
        sums[2 * k].sub_(mu[k], alpha=len(norm))
        sums[2 * k + 1].sub_(mu[k], alpha=float((1 / norm.clamp_min(1e-300)).sum()))
        out.append(PromptSums(sums[2 * k], sums[2 * k + 1], float((norm * norm).sum()), len(norm)))
    return list(zip(out[0::2], out[1::2], strict=True))


class Row:
    """One row's second pass, prompt by prompt: the per-prompt scalars every cell and interval is computed from."""

    def __init__(self, prompts: int, shifts: int):
        self.m, self.shifts = prompts, shifts
        self.recent: deque[tuple[int, PromptSums]] = deque(maxlen=shifts)  # the last K prompts' negative sums
        self.first: list[PromptSums] = []  # the first K prompts' positive sums, for the shifts that wrap around
        self.pair = np.zeros((shifts + 1, prompts))  # [0: same prompt, k: shift k; prompt j] sum of centred products
        self.pairs = np.zeros((shifts + 1, prompts))  # number of pairs
        self.cosine = np.zeros((shifts + 1, prompts))  # sum of cosines
        self.between = np.zeros(prompts)  # c+ c- (mean+ - mu+) . (mean- - mu-)
        self.square = {True: np.zeros(prompts), False: np.zeros(prompts)}
        self.count = {True: np.zeros(prompts), False: np.zeros(prompts)}

    def _pair(self, slot: int, j: int, pos: PromptSums, neg: PromptSums) -> None:
        device = pos.centred.device  # a held partner is in host memory
        self.pair[slot, j] = float(pos.centred @ neg.centred.to(device))
        self.pairs[slot, j] = pos.count * neg.count
        self.cosine[slot, j] = float(pos.unit @ neg.unit.to(device))

    def add_prompt(self, j: int, pos: PromptSums, neg: PromptSums) -> None:
        """The j-th prompt in the shuffled order: its same-prompt pairs, and its positives with the negatives of
        prompt j - k for each of the last K prompts."""
        self._pair(0, j, pos, neg)
        self.between[j] = pos.count * neg.count * float((pos.centred / pos.count) @ (neg.centred / neg.count))
        for sign, sums in ((True, pos), (False, neg)):
            self.square[sign][j], self.count[sign][j] = sums.square, sums.count
        for i, older in self.recent:
            self._pair(j - i, j, pos, older)
        self.recent.append((j, neg.held()))
        if j < self.shifts:
            self.first.append(pos.held())

    def close(self) -> None:
        """The wrapped pairs: prompt j < k's positives with prompt m - k + j's negatives (still among the last K);
        then the held sums are let go."""
        last = dict(self.recent)
        for k in range(1, self.shifts + 1):
            for j in range(k):
                self._pair(k, j, self.first[j], last[self.m - k + j])
        self.recent.clear()
        self.first.clear()


def cells(row: Row, parameters: int, resamples: np.ndarray) -> dict[str, dict[str, float]]:
    """Every column's value and permuted baseline, with 95% prompt-bootstrap intervals. `resamples`: [B, m] how many
    times each prompt is drawn in each resample."""
    w = np.vstack([np.ones(row.m), resamples])  # [1 + B, m]: the full sample first
    var = {s: (w @ row.square[s]) / (w @ row.count[s]) for s in (True, False)}
    scale = np.sqrt(var[True] * var[False])
    same_pairs, perm_pairs = w @ row.pairs[0], w @ row.pairs[1:].sum(0)
    same = {"cov": w @ row.pair[0] / same_pairs, "cosine": w @ row.cosine[0] / same_pairs,
            "between": w @ row.between / same_pairs}
    perm = {"cov": w @ row.pair[1:].sum(0) / perm_pairs, "cosine": w @ row.cosine[1:].sum(0) / perm_pairs}
    perm["between"] = perm["cov"]  # rollouts of different prompts: their covariance is all between prompts
    out = {}
    for stats in (same, perm):
        stats["within"] = stats["cov"] - stats["between"]
        stats["cov_per_parameter"] = stats["cov"] / parameters
        stats["corr"] = stats["cov"] / scale
    for column in COLUMNS:
        out[column] = {}
        for key, stats in (("value", same), ("permuted", perm)):
            low, high = np.percentile(stats[column][1:], [2.5, 97.5])
            out[column] |= {key: float(stats[column][0]), f"{key}_low": float(low), f"{key}_high": float(high)}
    return out


MEANS_BATCH = 64  # rollouts per backward of the first pass, unless the panel takes fewer at a time


def pooled_means(model, groups: list[Group], specs: list[tuple[str, bool]], batch: int) -> torch.Tensor:
    """The first pass, for rows given as (weight, centred): [2 x rows, parameters], each row's mu+ and mu- in
    `summing(model)`'s precision on the model's device. A mean is the mean weighted gradient of every positive (or
    negative) rollout, as the gradient of their weighted log-likelihoods summed (backward passes over `batch`
    rollouts at a time), accumulated in float64 in host memory; an uncentred row's is zero."""
    parameters = sum(p.numel() for p in model.parameters())
    mu = torch.zeros(2 * len(specs), parameters, dtype=summing(model), device=model.device)
    first_row: dict[str, int] = {}  # a weight's means are computed once
    for r, (weight, centred) in enumerate(specs):
        if not centred:
            continue
        if weight in first_row:
            mu[2 * r:2 * r + 2] = mu[2 * first_row[weight]:2 * first_row[weight] + 2]
            continue
        first_row[weight] = r
        for c, sign in enumerate((True, False)):
            rollouts = [((g.prompt_ids, o), float(w)) for g in groups
                        for o, w, p in zip(g.responses, weights(g, weight), g.positive, strict=True) if p == sign]
            total = torch.zeros(parameters, dtype=torch.float64)
            for start in range(0, len(rollouts), batch):
                chunk = rollouts[start:start + batch]
                total += weighted_gradient(model, [o for o, _ in chunk], [w for _, w in chunk])
            mu[2 * r + c] = (total / len(rollouts)).to(mu)
    return mu


def panel(model, groups: dict[str, list[Group]], shifts: int, seed: int, bootstrap: int = BOOTSTRAP,
          rows_per_pass: int = 0, rollouts_per_pass: int = 0) -> list[dict]:
    """The panel over the mixed prompts' rollouts (`groups`: the "train" and the "eval" rollouts), in ROWS' order:
    [{estimator, mixed_prompts, shifts, column: cell}]; a row whose rollouts have fewer than 2 mixed prompts says so
    instead. Two passes over each set of rollouts, shared by `rows_per_pass` of the set's rows (0: all of them), a
    prompt's rollouts taken `rollouts_per_pass` at a time (0: all at once). Both change only what is held at once
    (twogrpo.plan.contrastive_memory), and the values up to float rounding."""
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    out = {}
    for which in ("train", "eval"):
        specs = {name: (weight, centred) for name, (weight, centred, rollouts) in ROWS.items() if rollouts == which}
        batch = groups[which]
        m = len(batch)
        if m < 2:
            out |= {name: {"not_measured": f"only {m} prompts had both right and wrong responses; need 2 or more"}
                    for name in specs}
            continue
        k = min(shifts, m - 1)  # a shift by m is the identity
        rows = {name: Row(m, k) for name in specs}
        names = list(specs)
        for first in range(0, len(names), rows_per_pass or len(names)):
            part = names[first:first + (rows_per_pass or len(names))]
            mu = pooled_means(model, batch, [specs[name] for name in part], rollouts_per_pass or MEANS_BATCH)
            for j, q in enumerate(np.random.default_rng(seed).permutation(m)):
                sums = prompt_sums(model, batch[q], [specs[name][0] for name in part], mu, rollouts_per_pass)
                for name, (pos, neg) in zip(part, sums, strict=True):
                    rows[name].add_prompt(j, pos, neg)
            del mu
            for name in part:
                rows[name].close()
        resamples = np.random.default_rng(seed).multinomial(m, np.full(m, 1 / m), size=bootstrap)
        for name, row in rows.items():
            out[name] = {"mixed_prompts": m, "shifts": k, **cells(row, parameters, resamples)}
    return [{"estimator": name, **out[name]} for name in ROWS]
