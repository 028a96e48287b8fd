"""The optimizer of both trainings (the base policy's SFT, GRPO): AdamW with a linear learning-rate warm-up."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw_with_warmup(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                      warmup: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW, and a schedule of a linear warm-up over `warmup` scheduler steps (SFT steps, or GRPO's generation
    steps), then constant. Departure from verl/HF (which start at lr 0 and so waste the first step): step s uses
    lr * min(1, (s + 1) / warmup)."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
