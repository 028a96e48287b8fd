"""The GRPO objective as verl's built-in GRPO computes it (paper §2.1, Eq. 3-4; verl core_algos.py).

Shapes: R rollouts in prompt-major groups of G, T response tokens (right-padded, mask marks real tokens).
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of G consecutive rollouts.  rewards: [R] -> [R].

    std is Bessel-corrected (torch.std, as verl): a mixed pair {1, 0} gets +-1/sqrt(2), not the paper's +-1
    (brief §1.3). A group whose rewards are all equal gets exactly 0: it carries no signal.
    """
    groups = rewards.view(-1, group_size)  # [R/G, G]
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True)  # unbiased
    return ((groups - mean) / (std + eps)).view(-1)


def dead_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[R/G] bool: groups whose rewards are all equal (zero advantage, no gradient; paper Table 3's discards)."""
    groups = rewards.view(-1, group_size)
    return (groups == groups[:, :1]).all(dim=1)


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: torch.Tensor, width: int) -> torch.Tensor:
    """Log-probs of the response tokens under `model`.

    input_ids, attention_mask: [N, L] right-padded prompt+response; response_start: [N] index of each row's first
    response token. Returns [N, width]: position t holds log p(response token t), 0 past the row's end.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # [N, L-1, V]
    targets = input_ids[:, 1:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, L-1]
    # Gather each row's window [start-1, start-1+width) of predicted positions.
    index = (response_start - 1).unsqueeze(1) + torch.arange(width).unsqueeze(0)  # [N, width]
    return logp.gather(1, index.clamp(max=logp.shape[1] - 1))


def policy_loss_terms(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_low: float,
                      clip_high: float, clip_ratio_c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss with verl's dual clip, and where the ratio was clipped.

    logp, old_logp: [N, T]; advantages: [N] (one per rollout, broadcast over its tokens).
    loss = max(-A r, -A clip(r, 1-clip_low, 1+clip_high)); for A < 0 also capped at -A * clip_ratio_c.
    """
    adv = advantages.unsqueeze(1)  # [N, 1]
    ratio = torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))  # verl clamps the log-ratio before exp
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    loss = torch.where(adv < 0, torch.minimum(loss, -adv * clip_ratio_c), loss)
    return loss, (clipped > unclipped)


def token_mean(values: torch.Tensor, mask: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """verl's token-mean: the sum over a mini-batch's response tokens divided by their count (dead groups included).

    With micro-batches, pass the whole mini-batch's token count so the accumulated gradients equal one big batch.
    """
    return (values * mask).sum() / total_tokens
