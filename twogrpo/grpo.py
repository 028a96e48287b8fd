"""The GRPO objective as verl's built-in GRPO computes it (paper §2.1, Eq. 3-4; verl core_algos.py), with its variants.

Shapes: R rollouts in prompt-major groups of G, T response tokens (right-padded; `mask` marks real tokens).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from twogrpo.choices import AdvStd, LossAgg


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float, std: AdvStd = "bessel") -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of G consecutive rollouts.  rewards: [R] -> [R].

    bessel: torch.std as verl (compute_grpo_outcome_advantage, verl/trainer/ppo/core_algos.py); a mixed pair {1, 0}
    gets +-1/sqrt(2). population: the paper's equations; +-1. none: Dr. GRPO's r - mean; +-0.5. A group whose rewards
    are all equal gets exactly 0 in every mode.
    """
    groups = rewards.view(-1, group_size)  # [R/G, G]
    centered = groups - groups.mean(dim=1, keepdim=True)
    if std == "none":
        return centered.view(-1)
    scale = groups.std(dim=1, keepdim=True, correction=1 if std == "bessel" else 0)
    return (centered / (scale + eps)).view(-1)


def dead_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[R/G] bool: groups whose rewards are all equal (zero advantage, no gradient; paper Table 3's discards)."""
    groups = rewards.view(-1, group_size)
    return (groups == groups[:, :1]).all(dim=1)


# Full-vocabulary logits exist for at most this many elements at once (2^26 float32 = 256 MiB; 441 tokens at
# Qwen2.5's 151,936 entries): the update's memory then grows with tokens x hidden size, not tokens x vocabulary.
LOGIT_CHUNK_ELEMENTS = 2**26


def logit_chunk(head: torch.nn.Module) -> int:
    """Positions per pass through the output layer `head`: LOGIT_CHUNK_ELEMENTS logits at a time."""
    return max(1, LOGIT_CHUNK_ELEMENTS // head.out_features)


def _head_chunk(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target and entropy of each distribution, for one chunk of positions.  hidden: [c, H]."""
    logp_all = torch.log_softmax(head(hidden).float(), dim=-1)  # [c, V], float32 as verl's logits
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.enable_grad() if entropy_grad else torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def head_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                  entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[M] log-probs of `targets` and [M] entropies, from [M, H] final hidden states through the output layer `head`,
    LOGIT_CHUNK_ELEMENTS at a time. With gradients on, each chunk's logits are recomputed in the backward pass
    (activation checkpointing) instead of being kept. The entropy carries a gradient only with `entropy_grad` (an
    entropy bonus); otherwise it is a statistic."""
    chunk = logit_chunk(head)
    if hidden.shape[0] <= chunk or not torch.is_grad_enabled():
        parts = [_head_chunk(head, hidden[i:i + chunk], targets[i:i + chunk], entropy_grad)
                 for i in range(0, hidden.shape[0], chunk)]
    else:
        parts = [checkpoint(_head_chunk, head, hidden[i:i + chunk], targets[i:i + chunk], entropy_grad,
                            use_reentrant=False) for i in range(0, hidden.shape[0], chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def final_hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                        position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B, L, H] the model's last hidden states (after the final norm: what the output layer reads), from a forward
    pass of the whole model (so that FSDP gathers the output layer too) that computes one position's logits only.
    `attention_mask` None with `position_ids` restarting at 0 marks several sequences packed into one row."""
    captured = []
    body = getattr(model, "module", model).get_decoder()  # the model without its output layer (through DDP)
    hook = body.register_forward_hook(lambda module, args, out: captured.append(out.last_hidden_state))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
              logits_to_keep=1)
    finally:
        hook.remove()
    return captured[0]


def head_kl(head: torch.nn.Module, hidden: torch.Tensor, base_head: torch.nn.Module,
            base_hidden: torch.Tensor) -> torch.Tensor:
    """The sum over M positions of KL(p || q) over the whole vocabulary, p from [M, H] hidden states through `head`
    and q from the base's through `base_head`, LOGIT_CHUNK_ELEMENTS at a time."""
    chunk = logit_chunk(head)
    total = hidden.new_zeros((), dtype=torch.float64)
    for i in range(0, hidden.shape[0], chunk):
        logp = torch.log_softmax(head(hidden[i:i + chunk]).float(), dim=-1)
        logq = torch.log_softmax(base_head(base_hidden[i:i + chunk]).float(), dim=-1)
        total += (logp.exp() * (logp - logq)).sum().double()
    return total


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The vocabulary projection of `model` (through a DDP wrapper)."""
    return getattr(model, "module", model).get_output_embeddings()


def policy_loss_terms(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                      clip_high: float, clip_ratio_c: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate loss with verl's dual clip, and where each clip bound.

    logp, old_logp: [N, T]; advantages: [N] (one per rollout, broadcast over its tokens).
    loss = max(-A r, -A clip(r, 1-clip_low, 1+clip_high)); for A < 0 also capped at -A * clip_ratio_c.
    Returns the [N, T] loss and boolean [N, T] masks: high (A > 0, r > 1+clip_high), low (A < 0, r < 1-clip_low),
    dual (A < 0, r > clip_ratio_c): the tokens whose gradient the clip removed.
    """
    adv = advantages.unsqueeze(1)  # [N, 1]
    ratio = torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))  # verl clamps the log-ratio before exp
    loss = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high))
    loss = torch.where(adv < 0, torch.minimum(loss, -adv * clip_ratio_c), loss)
    clipped = {"high": (adv > 0) & (ratio > 1.0 + clip_high), "low": (adv < 0) & (ratio < 1.0 - clip_low),
               "dual": (adv < 0) & (ratio > clip_ratio_c)}
    return loss, clipped


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """verl's low_var_kl (Schulman's k3) per token: exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10]."""
    log_ratio = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: LossAgg, minibatch_sequences: int,
              minibatch_tokens: int, horizon: int, micro_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """This micro-batch's share of the mini-batch loss under `mode`; shares summed over micro-batches give the
    mini-batch loss. values, mask: [n, T]; `micro_batch`: the (rollouts, response tokens) of the micro-batch these
    rows belong to, when they are one forward pass of several (default: these rows').

    token-mean: sum / all response tokens of the mini-batch (discarded groups' tokens count; verl's new engine
    workers, from November 2025);
    micro-token-mean: the token mean of this micro-batch, weighted by its share of the mini-batch's sequences (verl's
    actor at the paper's time, dp_actor.update_policy: each micro-batch's token-mean loss times micro-batch rows /
    mini-batch rows, or 1 / gradient-accumulation steps with equal micro-batches; gradients averaged over
    processes). Micro-batches count about equally whatever their tokens, so the micro-batch size shapes the result;
    seq-mean-token-mean: each sequence's token mean, summed / sequences of the mini-batch (the paper's equations);
    seq-mean-token-sum-norm: each sequence's token sum / horizon (a constant), summed / sequences (Dr. GRPO).
    """
    per_token = values * mask
    if mode == "token-mean":
        return per_token.sum() / minibatch_tokens
    if mode == "micro-token-mean":
        rows, tokens = micro_batch or (mask.shape[0], mask.sum())
        return per_token.sum() / tokens * rows / minibatch_sequences
    if mode == "seq-mean-token-mean":
        return (per_token.sum(-1) / mask.sum(-1)).sum() / minibatch_sequences
    if mode == "seq-mean-token-sum-norm":
        return (per_token.sum(-1) / horizon).sum() / minibatch_sequences
    raise ValueError(f"unknown loss aggregation {mode!r}")
