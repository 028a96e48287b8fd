"""The GRPO training loop, structured as verl runs it (paper App. C.1, brief §1.4).

Per generation step: sample G rollouts for each prompt of the generation batch, grade them, compute group
advantages, compute "old" log-probs with the training model before any update, then one pass over the batch in
optimizer mini-batches of Q = B/G prompts (groups never split), and step the LR scheduler once.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twogrpo import grpo
from twogrpo.config import ArmConfig, EvaluateConfig, TaskConfig, TrainConfig
from twogrpo.engine import HFEngine, Samples, Sampling
from twogrpo.evaluation import sample_records
from twogrpo.grading import rewards as grade_rewards
from twogrpo.policy import render_prompts

log = logging.getLogger(__name__)
PHASES = ("generation", "reward", "old_logprob", "update")


class PhaseTimer:
    """Wall-clock seconds accumulated per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


@dataclass
class Batch:
    """A padded slice of rollouts for one forward pass."""

    input_ids: torch.Tensor  # [N, L] prompt + response, right-padded
    attention_mask: torch.Tensor  # [N, L]
    response_start: torch.Tensor  # [N]
    response_mask: torch.Tensor  # [N, T] 1 on real response tokens
    width: int  # T, the longest response in the slice


def collate(samples: Samples, rows: list[int], pad_id: int) -> Batch:
    seqs = [samples.prompt_ids[i] + samples.response_ids[i] for i in rows]
    resp_len = [len(samples.response_ids[i]) for i in rows]
    length, width = max(map(len, seqs)), max(resp_len)
    return Batch(
        input_ids=torch.tensor([s + [pad_id] * (length - len(s)) for s in seqs]),
        attention_mask=torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in seqs]),
        response_start=torch.tensor([len(samples.prompt_ids[i]) for i in rows]),
        response_mask=torch.tensor([[1.0] * n + [0.0] * (width - n) for n in resp_len]),
        width=width,
    )


def logprobs(model, batch: Batch) -> torch.Tensor:
    return grpo.token_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_start, batch.width)


@torch.no_grad()
def old_logprobs(model, samples: Samples, micro: int, pad: int) -> torch.Tensor:
    """[R, T] log-probs of every rollout's tokens under the model before this generation step's first update."""
    model.eval()
    n = len(samples.response_ids)
    parts = [logprobs(model, collate(samples, list(range(i, min(i + micro, n))), pad)) for i in range(0, n, micro)]
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


def update_minibatch(model, optimizer, samples: Samples, rows: list[int], old_logp: torch.Tensor,
                     advantages: torch.Tensor, cfg: TrainConfig, pad: int) -> int:
    """One optimizer step on one mini-batch (whole groups), token-mean loss; returns the clipped-token count."""
    model.train()
    total_tokens = sum(len(samples.response_ids[i]) for i in rows)
    clipped_tokens = 0
    optimizer.zero_grad(set_to_none=True)
    for i in range(0, len(rows), cfg.micro_batch_rollouts):
        part = rows[i:i + cfg.micro_batch_rollouts]
        batch = collate(samples, part, pad)
        terms, clipped = grpo.policy_loss_terms(logprobs(model, batch), old_logp[part, : batch.width],
                                                advantages[part], cfg.clip_low, cfg.clip_high, cfg.clip_ratio_c)
        grpo.token_mean(terms, batch.response_mask, total_tokens).backward()
        clipped_tokens += int((clipped * batch.response_mask).sum())
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return clipped_tokens


def train_grpo(model, tokenizer, prompts: pd.DataFrame, test: pd.DataFrame, task: TaskConfig, cfg: TrainConfig,
               arm: ArmConfig, seed: int, eval_cfg: EvaluateConfig,
               on_step: Callable[[dict], None] = lambda row: None) -> pd.DataFrame:
    """Train `model` in place; return the ledger (TrainSteps), one row per generation step, row 0 before training."""
    torch.manual_seed(seed)
    order_rng = np.random.default_rng(seed)
    G = arm.group_size
    Q = cfg.prompts_per_minibatch(G)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr(arm), weight_decay=cfg.weight_decay)
    # Linear warm-up counted in generation steps, then constant. Departure from verl/HF (which start at lr 0 and so
    # waste the first generation step): step s uses lr * min(1, (s + 1) / warmup).
    warmup = cfg.warmup_gen_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    engine = HFEngine(model, tokenizer)
    rollout = Sampling(cfg.temperature, cfg.top_p, cfg.top_k, task.max_new_tokens, n=G)
    evaluation = Sampling(eval_cfg.temperature, eval_cfg.top_p, eval_cfg.top_k, task.max_new_tokens,
                          n=cfg.eval_samples)
    eval_problems = test.iloc[: cfg.eval_problems]
    pad = tokenizer.pad_token_id
    timer = PhaseTimer()
    totals = {"opt_steps": 0, "rollouts": 0, "tokens": 0}
    ledger: list[dict] = []

    def record(gen_step: int, epoch: int, stats: dict) -> None:
        accuracy, eval_time = float("nan"), 0.0
        if gen_step % cfg.eval_every == 0 or gen_step == steps_total:
            t0 = time.perf_counter()
            records = sample_records(engine, eval_problems, task.prompt_template, evaluation, seed=eval_cfg.seed)
            accuracy, eval_time = float(records["correct"].mean()), time.perf_counter() - t0
        row = {"gen_step": gen_step, "epoch": epoch, **totals, "lr": 0.0, "mean_reward": float("nan"),
               "dead_group_frac": float("nan"), "clip_frac": float("nan"), "mean_response_tokens": float("nan"),
               **stats,
               **{f"time_{p}": timer.seconds[p] for p in PHASES}, "train_time": sum(timer.seconds.values()),
               "eval_accuracy": accuracy,
               "time_eval": eval_time + (ledger[-1]["time_eval"] if ledger else 0.0)}
        ledger.append(row)
        on_step(row)
        log.info("step %d/%d: reward %.3f, dead %.2f, eval %.3f, train %.1f s", gen_step, steps_total,
                 row["mean_reward"], row["dead_group_frac"], accuracy, row["train_time"])

    steps_per_epoch = cfg.prompts // cfg.generation_batch_prompts
    steps_total = steps_per_epoch * cfg.epochs
    record(0, 0, {})
    gen_step = 0
    for epoch in range(cfg.epochs):
        permutation = order_rng.permutation(cfg.prompts)
        for batch_start in range(0, cfg.prompts, cfg.generation_batch_prompts):
            gen_step += 1
            batch = prompts.iloc[permutation[batch_start:batch_start + cfg.generation_batch_prompts]]
            lr_used = scheduler.get_last_lr()[0]
            with timer("generation"):
                texts = render_prompts(tokenizer, batch["problem"].tolist(), task.prompt_template)
                samples = engine.generate(texts, rollout)
            with timer("reward"):
                golds = [a for a in batch["answer"] for _ in range(G)]
                rewards = torch.tensor(grade_rewards(golds, samples.texts))
                advantages = grpo.group_advantages(rewards, G, cfg.adv_eps)
            n_rollouts = len(samples.texts)
            with timer("old_logprob"):
                old_logp = old_logprobs(model, samples, cfg.micro_batch_rollouts, pad)
            clipped_tokens = 0
            with timer("update"):
                for start in range(0, n_rollouts, Q * G):  # Q*G rollouts: whole groups, never split
                    clipped_tokens += update_minibatch(model, optimizer, samples, list(range(start, start + Q * G)),
                                                       old_logp, advantages, cfg, pad)
                    totals["opt_steps"] += 1
                scheduler.step()
            totals["rollouts"] += n_rollouts
            totals["tokens"] += samples.num_tokens
            record(gen_step, epoch, {
                "lr": lr_used,
                "mean_reward": float(rewards.mean()),
                "dead_group_frac": float(grpo.dead_groups(rewards, G).float().mean()),
                "clip_frac": clipped_tokens / samples.num_tokens,
                "mean_response_tokens": samples.num_tokens / n_rollouts,
            })
    return pd.DataFrame(ledger)
