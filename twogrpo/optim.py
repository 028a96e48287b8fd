"""The optimizer of both trainings (the base policy's SFT, GRPO): AdamW with a linear learning-rate warm-up, or plain
SGD for an arm that probes Adam's step (docs/ladder.md)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from twogrpo.choices import Optimizer


def optimizer_with_warmup(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, warmup: int,
                          kind: Optimizer = "adamw") -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (or plain SGD), and a schedule of a linear warm-up over `warmup` scheduler steps (SFT steps, or GRPO's
    generation steps), then constant. Departure from verl/HF (which start at lr 0 and so waste the first step): step s
    uses lr * min(1, (s + 1) / warmup).

    SGD takes no momentum and no weight decay: its update is the rate times the gradient, nothing else. (torch's SGD
    decay is an L2 term scaled by the rate, which at an SGD rate near 1 would shrink the weights by 1% an update;
    AdamW's decoupled decay moves them by lr x 0.01 of their size, 1e-5 at 8e-4.)"""
    optimizer = (torch.optim.SGD(parameters, lr=lr) if kind == "sgd"
                 else torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
