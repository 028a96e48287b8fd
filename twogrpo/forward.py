"""The trainer's forward passes: rollouts cut into micro-batches (by count or by token budget, verl's dynamic batch
size), collated right-padded or packed, the log-probs of their response tokens under a model, and a model's KL to
another on them."""

from __future__ import annotations

import heapq
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from twogrpo import grpo
from twogrpo.config import TrainConfig
from twogrpo.distributed import is_sharded, max_over_processes, pad_to_most
from twogrpo.sampling import Samples


@dataclass(frozen=True)
class Forward:
    """How the trainer's forward passes run: micro-batches of a number of rollouts, or of a token budget (verl's
    dynamic batch size), in float32 or bf16 autocast. Micro-batching changes memory and speed, not the result (float
    rounding aside), except under loss_agg micro-token-mean, where each micro-batch is normalised by its own tokens;
    bf16 changes the rounding."""

    rollouts: int  # rollouts per micro-batch (train.micro_batch_rollouts), when tokens is 0
    tokens: int = 0  # tokens per micro-batch (train.micro_batch_tokens); 0 = by rollouts
    precision: str = "float32"  # train.precision: float32, or bfloat16 compute over float32 weights

    @classmethod
    def of(cls, cfg: TrainConfig) -> Forward:
        return cls(cfg.micro_batch_rollouts, cfg.micro_batch_tokens, cfg.precision)

    def split(self, samples: Samples, rows: list[int]) -> list[list[int]]:
        """`rows` cut into micro-batches: `rollouts` at a time, in order; or by the token budget as verl's dynamic
        batch size cuts them (verl/utils/seqlen_balancing.py, rearrange_micro_batches): k = ceil(prompt + response
        tokens / budget) micro-batches, the largest k of all processes (so a lighter process makes smaller ones),
        balanced by tokens (balanced_partitions). Each micro-batch then mixes long and short rollouts, so under
        micro-token-mean every token weighs about as under token-mean (tests/test_logprobs.py measures it)."""
        if not self.tokens:
            return [rows[i:i + self.rollouts] for i in range(0, len(rows), self.rollouts)]
        lengths = sequence_lengths(samples, rows)
        k = min(len(rows), max_over_processes(-(-sum(lengths) // self.tokens)))
        return [[rows[j] for j in part] for part in balanced_partitions(lengths, k)]

    def passes(self, samples: Samples, part: list[int], packed: bool) -> list[list[int]]:
        """A micro-batch's forward passes: the whole micro-batch when packed or cut by rollouts; right-padded, its
        rollouts longest first, as many per pass as fit the budget once padded to the pass's longest (a balanced
        micro-batch mixes lengths, so padded whole it would hold 2-5 times the budget on MATH-like lengths). The
        loss is still normalised by the whole micro-batch (grpo.aggregate's micro_batch)."""
        if packed or not self.tokens:
            return [part]
        length = dict(zip(part, sequence_lengths(samples, part), strict=True))
        out: list[list[int]] = []
        for i in sorted(part, key=lambda i: -length[i]):
            if out and (len(out[-1]) + 1) * length[out[-1][0]] <= self.tokens:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def every_pass(self, samples: Samples, rows: list[int], packed: bool) -> list[list[int]]:
        """The forward passes over `rows` without gradients (old, reference or base log-probs), each micro-batch's in
        turn: with no loss to normalise, the micro-batches shape only memory."""
        return [chunk for part in self.split(samples, rows) for chunk in self.passes(samples, part, packed)]

    def autocast(self, device: torch.device):
        """bf16 autocast (verl's FSDP mixed precision: bf16 compute, float32 master weights and AdamW state)."""
        if self.precision == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()


def sequence_lengths(samples: Samples, rows: list[int]) -> list[int]:
    """Prompt + response tokens of each of `rows`: what a micro-batch's token budget counts."""
    return [len(samples.prompt_ids[i]) + len(samples.response_ids[i]) for i in rows]


def balanced_partitions(lengths: list[int], k: int, equal_size: bool = False) -> list[list[int]]:
    """Positions 0..n-1 split into k non-empty parts of about equal total length, each part in ascending order, the
    parts ordered by their first position: the largest differencing method of Karmarkar and Karp (1982), which verl
    uses for its micro-batches and, with equal_size (n a multiple of k: every part n / k items), for balance_batch
    (verl/utils/seqlen_balancing.py, get_seqlen_balanced_partitions). Every item starts as a k-way partial
    partition of its own (equal_size: every k consecutive items by length, one per part); the two partial partitions
    with the largest spread (largest - smallest part) are merged, the largest part of one with the smallest of the
    other, until one is left."""
    if not 1 <= k <= len(lengths) or (equal_size and len(lengths) % k):
        raise ValueError(f"{len(lengths)} items cannot make {k} non-empty{' equal' if equal_size else ''} parts")
    if equal_size:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        starts = [sorted(((lengths[i], [i]) for i in order[j:j + k]), key=lambda p: -p[0])
                  for j in range(0, len(order), k)]
    else:
        starts = [[(n, [i])] + [(0, [])] * (k - 1) for i, n in enumerate(lengths)]
    heap = [(p[-1][0] - p[0][0], tie, p) for tie, p in enumerate(starts)]  # (-spread, tie-break, parts, largest first)
    heapq.heapify(heap)
    while len(heap) > 1:
        _, tie, a = heapq.heappop(heap)
        _, _, b = heapq.heappop(heap)
        merged = sorted(((ta + tb, pa + pb) for (ta, pa), (tb, pb) in zip(a, reversed(b), strict=True)),
                        key=lambda p: -p[0])
        heapq.heappush(heap, (merged[-1][0] - merged[0][0], tie, merged))
    return sorted(sorted(positions) for _, positions in heap[0][2])


def packs(model) -> bool:
    """Whether micro-batches by token budget are packed into one row: under flash attention, which attends within
    each packed rollout from the position ids. Under SDPA or eager attention a packed row needs a dense
    block-diagonal mask and attends over the whole row (quadratic in the micro-batch's tokens), so rollouts are
    right-padded instead."""
    return (getattr(model, "module", model).config._attn_implementation or "").startswith("flash")


@dataclass
class Batch:
    """Rollouts for one forward pass: right-padded rows, or packed end to end in one row (no padding)."""

    input_ids: torch.Tensor  # [B, L] prompt + response
    attention_mask: torch.Tensor | None  # [B, L]; None when packed
    position_ids: torch.Tensor | None  # [1, L] restarting at 0 for each packed rollout; None when padded
    predict: torch.Tensor  # [M] flat positions (in B * L) that predict a response token, one per real token
    targets: torch.Tensor  # [M] the response token each predicts
    where: tuple[torch.Tensor, torch.Tensor]  # [M] row and column of each in the [n, width] result
    response_mask: torch.Tensor  # [n, width] 1 on real response tokens
    width: int  # the longest response in the slice


def collate(samples: Samples, rows: list[int], pad_id: int, device: torch.device, packed: bool = False) -> Batch:
    if not rows:
        raise ValueError("an empty micro-batch")  # micro_batches never makes one: rows_to_update keeps a row
    seqs = [samples.prompt_ids[i] + samples.response_ids[i] for i in rows]
    starts = [len(samples.prompt_ids[i]) for i in rows]
    resp_len = [len(samples.response_ids[i]) for i in rows]
    length, width = max(map(len, seqs)), max(resp_len)
    # Where each sequence begins in the flattened input: one after another when packed, every `length` when padded.
    offsets = np.cumsum([0] + list(map(len, seqs)))[:-1] if packed else np.arange(len(seqs)) * length
    predict = [int(o) + s - 1 + t for o, s, n in zip(offsets, starts, resp_len, strict=True) for t in range(n)]
    flat = [tok for seq in seqs for tok in seq]
    targets = [samples.response_ids[i][t] for i in rows for t in range(len(samples.response_ids[i]))]

    def tensor(values, dtype=torch.long):
        return torch.tensor(values, dtype=dtype, device=device)

    where = (tensor([r for r, n in enumerate(resp_len) for _ in range(n)]),
             tensor([t for n in resp_len for t in range(n)]))
    mask = tensor([[1.0] * n + [0.0] * (width - n) for n in resp_len], torch.float32)
    if packed:
        positions = [p for seq in seqs for p in range(len(seq))]
        return Batch(tensor([flat]), None, tensor([positions]), tensor(predict), tensor(targets), where, mask, width)
    return Batch(
        input_ids=tensor([s + [pad_id] * (length - len(s)) for s in seqs]),
        attention_mask=tensor([[1] * len(s) + [0] * (length - len(s)) for s in seqs]),
        position_ids=None, predict=tensor(predict), targets=tensor(targets), where=where, response_mask=mask,
        width=width,
    )


def logprobs(model, batch: Batch, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, width] log-probs and entropies of the batch's response tokens (zeros past each response's end); the
    full-vocabulary logits exist only for real response tokens, a chunk at a time (grpo.head_logprobs)."""
    hidden = grpo.final_hidden_states(model, batch.input_ids, batch.attention_mask, batch.position_ids)
    logp, entropy = grpo.head_logprobs(grpo.output_layer(model), hidden.flatten(0, 1)[batch.predict], batch.targets,
                                       entropy_grad)
    zeros = batch.response_mask.new_zeros(batch.response_mask.shape)
    return zeros.index_put(batch.where, logp), zeros.index_put(batch.where, entropy)


def micro_batches(parts: list[list[int]], collective: bool) -> list[tuple[list[int], bool]]:
    """Micro-batches, each flagged real. With sharded weights every forward pass is collective, so a process with
    fewer micro-batches than another appends dummy ones (its first rollout, flagged False) whose results are
    dropped."""
    return pad_to_most(parts, collective, parts[0][:1] if parts else [])


@torch.no_grad()
def frozen_logprobs(model, samples: Samples, forward: Forward, pad: int, rows: list[int] | None = None) -> torch.Tensor:
    """[R, T] log-probs of the rollouts' tokens under `model` as it is now (old policy or frozen reference): of every
    rollout, or of `rows` only (the other rows are zeros)."""
    model.eval()
    n = len(samples.response_ids)
    rows = list(range(n)) if rows is None else rows
    out = torch.zeros(n, max(map(len, samples.response_ids)), device=model.device)
    packed = bool(forward.tokens) and packs(model)
    for part, real in micro_batches(forward.every_pass(samples, rows, packed), is_sharded(model)):
        with forward.autocast(model.device):
            logp = logprobs(model, collate(samples, part, pad, model.device, packed))[0]
        if real:
            out[part, : logp.shape[1]] = logp
    return out


@torch.no_grad()
def kl_to_base(model, base, samples: Samples, forward: Forward, pad: int) -> float:
    """The mean over the rollouts' response tokens of KL(model || base), each over the whole vocabulary at the state
    the token is drawn in (exact at each state the rollouts visit; no sampled estimator). Every process passes the
    same rollouts, so a sharded `model`'s collective forward passes match; `base` is whole."""
    model.eval()
    packed = bool(forward.tokens) and packs(model)
    total = 0.0
    for part in forward.every_pass(samples, list(range(len(samples.response_ids))), packed):
        batch = collate(samples, part, pad, model.device, packed)
        with forward.autocast(model.device):
            hidden = grpo.final_hidden_states(model, batch.input_ids, batch.attention_mask, batch.position_ids)
            base_hidden = grpo.final_hidden_states(base, batch.input_ids, batch.attention_mask, batch.position_ids)
            total += float(grpo.head_kl(grpo.output_layer(model), hidden.flatten(0, 1)[batch.predict],
                                        grpo.output_layer(base), base_hidden.flatten(0, 1)[batch.predict]))
    return total / max(samples.num_tokens, 1)
