"""Supervised fine-tuning of the tiny base policy on worked solutions, stopped on measured accuracy; resumable from a
snapshot taken at each accuracy measurement."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from twogrpo.checkpoint import Checkpointing, rng_states, set_rng_states
from twogrpo.config import BaseConfig
from twogrpo.engine import HFEngine
from twogrpo.evaluation import sample_records
from twogrpo.grading import graded
from twogrpo.optim import optimizer_with_warmup
from twogrpo.policy import render_prompts
from twogrpo.progress import Progress
from twogrpo.sampling import Sampling

log = logging.getLogger(__name__)


def sft_tokens(tokenizer, prompts: list[str], targets: list[str]) -> list[tuple[list[int], list[int]]]:
    """Each prompt's token ids and its target's with EOS appended: tokenized once, before the steps draw from them."""
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    return [(p, t + [tokenizer.eos_token_id]) for p, t in zip(prompt_ids, target_ids, strict=True)]


def padded_batch(pairs: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+target sequences; labels are -100 except on the target's tokens (EOS included)."""
    rows = [p + t for p, t in pairs]
    labels = [[-100] * len(p) + t for p, t in pairs]
    width = max(map(len, rows))
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
    }


def train_sft(model, tokenizer, train: pd.DataFrame, val: pd.DataFrame, template: str, max_new_tokens: int,
              cfg: BaseConfig, checkpointing: Checkpointing | None = None) -> pd.DataFrame:
    """Train until the sampled accuracy (T=1, one sample per validation problem) reaches cfg.target_accuracy.

    Accuracy jumps between evaluations of a tiny model trained from scratch, so the stop is measured, not a step
    count. Returns the curve: step, loss, val_accuracy, seconds. With `checkpointing` (every > 0), the state after
    each measurement that does not stop is saved; from `checkpointing.resume` the run continues exactly (CPU).
    """
    generator = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pairs = sft_tokens(tokenizer, render_prompts(tokenizer, train["problem"].tolist(), template),
                       train["solution"].tolist())
    optimizer, scheduler = optimizer_with_warmup(model.parameters(), cfg.lr, cfg.weight_decay, cfg.warmup_steps)
    engine = HFEngine(model, tokenizer)
    sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens, n=1)
    curve, order, losses, first, done_seconds = [], np.array([], dtype=int), [], 1, 0.0
    if checkpointing and checkpointing.resume:
        state = checkpointing.resume
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.bit_generator.state = state["generator"]
        set_rng_states(state["rng"])
        curve, order, first, done_seconds = state["curve"], state["order"], state["step"] + 1, state["seconds"]
        log.info("SFT resumed after step %d", state["step"])
    start = pd.Timestamp.now() - pd.Timedelta(seconds=done_seconds)  # seconds lost since the snapshot not counted
    progress = Progress(cfg.max_steps, "SFT steps", done=first - 1)  # the time left to max_steps: at most
    model.train()
    for step in range(first, cfg.max_steps + 1):
        if len(order) < cfg.batch_size:
            order = np.concatenate([order, generator.permutation(len(train))])
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        batch = padded_batch([pairs[i] for i in idx], tokenizer.pad_token_id)
        loss = model(**{key: value.to(model.device) for key, value in batch.items()}).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.advance()
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            # Graded by math-verify whatever grading.reward says: the base stage is shared by every grader choice.
            records = graded(sample_records(engine, val, template, sampling, seed=cfg.seed + step), val, "math-verify")
            accuracy = float(records["correct"].mean())
            seconds = (pd.Timestamp.now() - start).total_seconds()
            curve.append({"step": step, "loss": float(np.mean(losses)), "val_accuracy": accuracy, "seconds": seconds})
            log.info("SFT step %d/%d: loss %.3f, sampled accuracy %.3f (target %.2f), %.0f s, at most %s", step,
                     cfg.max_steps, np.mean(losses), accuracy, cfg.target_accuracy, seconds, progress.left())
            losses = []
            if accuracy >= cfg.target_accuracy:
                break
            if checkpointing and checkpointing.every and step < cfg.max_steps:
                checkpointing.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "generator": generator.bit_generator.state,
                                    "rng": rng_states(), "curve": list(curve), "order": order, "seconds": seconds})
    else:
        log.warning("SFT stopped at max_steps=%d below target_accuracy=%.2f", cfg.max_steps, cfg.target_accuracy)
    progress.close()
    return pd.DataFrame(curve)
