"""The GRPO training loop, structured as verl runs it (paper App. C.1, brief §1.4).

Per generation step: sample G rollouts for each prompt of the generation batch (2-GRPO+RS: replace groups whose
rewards are all equal by groups of new prompts, within 16-GRPO's rollout budget), grade them, compute group
advantages, compute "old" (and reference) log-probs with the models before any update, then `ppo_epochs` passes over
the batch in optimizer mini-batches of Q prompts (groups never split), and step the LR scheduler once.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from functools import partial
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twogrpo import grpo
from twogrpo.checkpoint import rng_states, set_rng_states
from twogrpo.config import ArmConfig, EvaluateConfig, TaskConfig, TrainConfig
from twogrpo.distributed import (Dist, full_optimizer_state, full_state_dict, is_sharded, load_full_states,
                                 local_value, pad_to_most, process_seed)
from twogrpo.engine import Samples, Sampling
from twogrpo.evaluation import graded, sample_records
from twogrpo.grading import Grader, rewards as grade_rewards
from twogrpo.policy import render_prompts

log = logging.getLogger(__name__)
PHASES = ("generation", "reward", "old_logprob", "update", "sync")
STEP_STATS = ("mean_reward", "dead_group_frac", "informative_prompts_per_update", "informative_tokens_per_update",
              "adv_abs_mean", "clip_frac_high", "clip_frac_low", "clip_frac_dual", "entropy", "grad_norm", "kl",
              "mean_response_tokens", "engine_logprob_gap")


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


class PromptStream:
    """Prompt indices as verl's dataloader gives them (shuffle with a seeded generator, drop_last): epoch after epoch a
    fresh permutation of the n prompts, cut to whole batches, so each epoch leaves out a different remainder and
    over the epochs every prompt is seen. 2-GRPO+RS draws its refills from the same stream, ahead of the batches."""

    def __init__(self, n: int, seed: int, batch: int = 1) -> None:
        self.n = n
        self.epoch_size = n // batch * batch
        self.rng = np.random.default_rng(seed)
        self.pending: list[int] = []
        self.drawn = 0

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.pending:
                self.pending = self.rng.permutation(self.n)[: self.epoch_size].tolist()
            out.append(self.pending.pop(0))
        self.drawn += k
        return out

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "pending": list(self.pending), "drawn": self.drawn}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.pending, self.drawn = list(state["pending"]), state["drawn"]


class NonFiniteError(FloatingPointError):
    """A NaN or infinite loss or gradient: training stops before the optimizer step, the last checkpoint stays."""


@contextmanager
def out_of_memory_names_the_budget(cfg: TrainConfig, gen_step: int, phase: str):
    """A GPU out-of-memory error in a forward/backward phase, reraised naming the setting that bounds its memory;
    training stops before the optimizer step, so the last checkpoint stays the one to resume from."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        budget = (f"train.micro_batch_tokens={cfg.micro_batch_tokens}" if cfg.micro_batch_tokens else
                  f"train.micro_batch_rollouts={cfg.micro_batch_rollouts} (or set train.micro_batch_tokens)")
        raise torch.OutOfMemoryError(
            f"generation step {gen_step}, {phase}: out of GPU memory; lower {budget}, which bounds the tokens of "
            f"one forward and backward pass, and rerun: the last checkpoint, if any, is kept. ({error})") from None


@dataclass
class Checkpointing:
    """Periodic snapshots of a run, and the snapshot to resume from (twogrpo.checkpoint.Checkpoint stores them)."""

    every: int  # generation steps between snapshots; 0 = none
    save: Callable[[dict], None]
    resume: dict | None = None


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

    def split(self, samples: Samples, rows: list[int], packed: bool = False) -> list[list[int]]:
        """`rows` cut into micro-batches: `rollouts` at a time, in order; or within the token budget: packed, as many
        rollouts in order as their tokens fit; padded, longest first, as many as fit once padded to the longest (so
        little padding is computed). A rollout longer than the budget makes a micro-batch of its own."""
        if not self.tokens:
            return [rows[i:i + self.rollouts] for i in range(0, len(rows), self.rollouts)]
        length = {i: len(samples.prompt_ids[i]) + len(samples.response_ids[i]) for i in rows}
        parts: list[list[int]] = []
        for i in rows if packed else sorted(rows, key=lambda i: -length[i]):
            if parts and (sum(length[j] for j in parts[-1]) + length[i] if packed else
                          (len(parts[-1]) + 1) * length[parts[-1][0]]) <= self.tokens:
                parts[-1].append(i)
            else:
                parts.append([i])
        return parts

    def autocast(self, device: torch.device):
        """bf16 autocast (verl's FSDP mixed precision: bf16 compute, float32 master weights and AdamW state)."""
        if self.precision == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()


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
    predict = [int(o) + s - 1 + t for o, s, n in zip(offsets, starts, resp_len) for t in range(n)]
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
    for part, real in micro_batches(forward.split(samples, rows, packed), is_sharded(model)):
        with forward.autocast(model.device):
            logp = logprobs(model, collate(samples, part, pad, model.device, packed))[0]
        if real:
            out[part, : logp.shape[1]] = logp
    return out


def rows_to_update(rows: list[int], dead: torch.Tensor, group_size: int, skip_dead: bool) -> list[int]:
    """The rollouts of a mini-batch that the update runs forward and backward on: all, or with skip_dead those of
    informative groups only (rows are prompt-major, so row // G is the group). A mini-batch of dead groups keeps one
    row: its gradient is zeros rather than missing (AdamW still decays and moves by its momentum, as in the full
    pass), and every process takes part in DDP's gradient all-reduce."""
    if not skip_dead:
        return rows
    return [i for i in rows if not dead[i // group_size]] or rows[:1]


@dataclass
class Rollouts:
    """One generation step's groups: the prompt of each group, its G samples, their rewards."""

    prompt_rows: list[int]  # [R/G] rows of the prompt table
    samples: Samples  # [R]
    rewards: torch.Tensor  # [R]


class RolloutSource:
    """Draws prompts, generates and grades groups; with `resample`, refills groups whose rewards are all equal."""

    def __init__(self, engine, prompts: pd.DataFrame, stream: PromptStream, template: str,
                 sampling: Sampling, timer: PhaseTimer, grader: Grader = "math-verify") -> None:
        self.engine, self.prompts, self.stream = engine, prompts, stream
        self.template, self.sampling, self.timer, self.grader = template, sampling, timer, grader

    def groups(self, rows: list[int]) -> Rollouts:
        batch = self.prompts.iloc[rows]
        with self.timer("generation"):
            texts = render_prompts(self.engine.tokenizer, batch["problem"].tolist(), self.template)
            samples = self.engine.generate(texts, self.sampling)
        with self.timer("reward"):
            golds = [a for a in batch["answer"] for _ in range(self.sampling.n)]
            rewards = torch.tensor(grade_rewards(golds, samples.texts, self.grader))
        return Rollouts(rows, samples, rewards)

    def step(self, n_prompts: int, resample: bool, rollout_cap: int, share: list[int] | None = None,
             dist: Dist | None = None) -> tuple[Rollouts, int, int]:
        """A generation batch of n_prompts groups (this process's `share` of them), and the rollouts and tokens this
        process generated for it (discarded included).

        2-GRPO+RS: each dead group (all rewards equal) is dropped and replaced by a group of the next prompt of the
        stream, round after round, until none is dead or the next replacement would pass rollout_cap. Over several
        processes, a round counts the dead groups of all of them, every process draws the same replacement prompts,
        and each takes, in rank order, the ones for its own dead groups.
        """
        G = self.sampling.n
        dist = dist or Dist()
        rows = self.stream.take(n_prompts)  # every process draws the same rows, then keeps its share
        if share is not None:
            rows = [rows[i] for i in share]
        out = self.groups(rows)
        generated, tokens, everyone = len(rows) * G, out.samples.num_tokens, n_prompts * G
        while resample:
            dead = grpo.dead_groups(out.rewards, G).nonzero().flatten().tolist()
            counts = dist.gather_objects(len(dead))
            draw = min(sum(counts), (rollout_cap - everyone) // G)
            if draw == 0:
                break
            drawn = self.stream.take(draw)
            everyone += draw * G
            allotted = [min(c, max(draw - sum(counts[:r]), 0)) for r, c in enumerate(counts)]
            first, replace = sum(allotted[: dist.rank]), allotted[dist.rank]
            if replace == 0 and not self.engine.collective:  # sharded weights: generate along with the others
                continue
            fresh = self.groups(drawn[first:first + replace])
            generated, tokens = generated + replace * G, tokens + fresh.samples.num_tokens
            keep = sorted(set(range(len(out.prompt_rows))) - set(dead[:replace]))
            rows = [g * G + j for g in keep for j in range(G)]
            samples = out.samples.select(rows)
            samples.extend(fresh.samples)
            out = Rollouts([out.prompt_rows[g] for g in keep] + fresh.prompt_rows, samples,
                           torch.cat([out.rewards[rows], fresh.rewards]))
        return out, generated, tokens


def logprob_gap(samples: Samples, trainer_logp: torch.Tensor) -> float:
    """Mean |engine - trainer| log-prob over the sampled tokens (a diagnostic; NaN when the engine gives none)."""
    if samples.logprobs is None:
        return float("nan")
    gaps = [abs(e - t) for row, engine in enumerate(samples.logprobs)
            for e, t in zip(engine, trainer_logp[row, : len(engine)].tolist())]
    return float(np.mean(gaps))


def update_minibatch(model, optimizer, samples: Samples, rows: list[int], old_logp: torch.Tensor,
                     ref_logp: torch.Tensor | None, advantages: torch.Tensor, cfg: TrainConfig, horizon: int,
                     pad: int, minibatch: tuple[int, int] | None = None, world: int = 1) -> dict[str, float]:
    """One optimizer step on one mini-batch of whole groups; returns token counts and sums for the telemetry.

    `rows` are the rollouts it runs on: this process's share of the mini-batch, less the dead groups' rollouts when
    they are skipped (rows_to_update); `minibatch` is the whole mini-batch's (sequences, response tokens) that the
    loss is normalised by (default: `rows`'). Over several processes the loss is multiplied by `world` because DDP
    and FSDP average gradients: the update is the one a single process would make on the whole mini-batch. The
    telemetry (entropy, clip counts) covers the tokens of `rows`."""
    model.train()
    tokens = sum(len(samples.response_ids[i]) for i in rows)
    sequences, total_tokens = minibatch or (len(rows), tokens)
    stats: dict[str, float] = defaultdict(float)
    optimizer.zero_grad(set_to_none=True)
    sharded = is_sharded(model)
    forward = Forward.of(cfg)
    device = next(model.parameters()).device  # model may be DDP-wrapped
    packed = bool(forward.tokens) and packs(model)
    # Under micro-token-mean the cut shapes the loss: the same cut (longest first) whether or not flash attention packs.
    cut_packed = packed and cfg.loss_agg != "micro-token-mean"
    parts = micro_batches(forward.split(samples, rows, cut_packed), sharded)
    for k, (part, real) in enumerate(parts):
        batch = collate(samples, part, pad, device, packed)
        mask = batch.response_mask
        # DDP reduces the gradients in every backward outside no_sync: here only in the last micro-batch, so each
        # process reduces once per step however many micro-batches its rows make (with dead groups skipped, the
        # processes' counts differ, and unequal reductions would hang). FSDP reduce-scatters in every backward; its
        # processes run equally many (micro_batches pads them).
        with model.no_sync() if world > 1 and not sharded and k < len(parts) - 1 else nullcontext():
            with forward.autocast(device):
                logp, entropy = logprobs(model, batch, entropy_grad=bool(cfg.entropy_coef))
            terms, clipped = grpo.policy_loss_terms(logp, old_logp[part, : batch.width], advantages[part],
                                                    cfg.clip_low, cfg.clip_high, cfg.clip_ratio_c)
            agg = partial(grpo.aggregate, mask=mask, mode=cfg.loss_agg, minibatch_sequences=sequences,
                          minibatch_tokens=total_tokens, horizon=horizon)
            loss = agg(terms)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * agg(entropy)
            if ref_logp is not None:
                kl = grpo.low_var_kl(logp, ref_logp[part, : batch.width])
                loss = loss + cfg.kl_coef * agg(kl)
                stats["kl_sum"] += float((kl.detach() * mask).sum())
            if not torch.isfinite(loss):
                raise NonFiniteError(f"the loss is {float(loss.detach())} on rollouts {part[0]}..{part[-1]}")
            (loss * (world if real else 0.0)).backward()
        if not real:
            continue
        stats["entropy_sum"] += float((entropy.detach() * mask).sum())
        for name, where in clipped.items():
            stats[f"clip_{name}"] += float((where * mask).sum())
    stats["tokens"] = tokens
    stats["grad_norm"] = float(local_value(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
    if not np.isfinite(stats["grad_norm"]):
        raise NonFiniteError(f"the gradient norm is {stats['grad_norm']}")
    optimizer.step()
    return stats


def train_grpo(model, tokenizer, engine, prompts: pd.DataFrame, test: pd.DataFrame, task: TaskConfig,
               cfg: TrainConfig, arm: ArmConfig, seed: int, eval_cfg: EvaluateConfig,
               on_step: Callable[[dict], None] = lambda row: None,
               checkpointing: Checkpointing | None = None, dist: Dist | None = None,
               grader: Grader = "math-verify") -> pd.DataFrame:
    """Train `model` in place, generating with `engine` (HF or vLLM, made from the same weights); return the ledger
    (TrainSteps), one row per generation step, row 0 before training.

    With `checkpointing`, a snapshot of the whole run state is saved every `every` generation steps, and a run given
    a snapshot to resume continues after its step: on the CPU with the HF engine, the final weights and ledger equal
    an uninterrupted run's (the seconds excepted: the work lost to the interruption is not counted). `on_step` sees
    the resumed rows again, so per-step logs are complete. A non-finite loss or gradient raises NonFiniteError.

    With `dist` over several processes (twogrpo.distributed), each process generates and trains on its share of
    every mini-batch, the step's telemetry is summed over processes, the evaluation is shared; the ledger
    describes the whole run on every process, with the first process's times. `grader` grades the rollouts' rewards
    and the in-training evaluation (twogrpo.grading)."""
    dist = dist or Dist()
    torch.manual_seed(process_seed(seed, dist.rank))
    G = arm.group_size
    Q = cfg.prompts_per_minibatch(arm)
    share = dist.share(cfg.generation_batch_prompts, Q) if dist.world > 1 else None
    reference = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef else None  # never sharded
    trained = dist.prepare(model, cfg.precision)  # DDP or FSDP over several processes; `model` generates and scores
    optimizer = torch.optim.AdamW(trained.parameters(), lr=cfg.lr(arm), weight_decay=cfg.weight_decay)
    # Linear warm-up counted in generation steps, then constant. Departure from verl/HF (which start at lr 0 and so
    # waste the first generation step): step s uses lr * min(1, (s + 1) / warmup).
    warmup = cfg.warmup_gen_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    timer = PhaseTimer()
    stream = PromptStream(cfg.prompts, seed, cfg.generation_batch_prompts)
    source = RolloutSource(engine, prompts, stream, task.prompt_template,
                           Sampling(cfg.temperature, cfg.top_p, cfg.top_k, task.max_new_tokens, n=G), timer, grader)
    evaluation = Sampling(eval_cfg.temperature, eval_cfg.top_p, eval_cfg.top_k, eval_cfg.max_new_tokens,
                          n=cfg.eval_samples)
    eval_problems = test[test["dataset"] == cfg.eval_benchmark].iloc[: cfg.eval_problems]
    pad = tokenizer.pad_token_id
    steps_total = cfg.steps_per_epoch * cfg.epochs
    totals = {"opt_steps": 0, "rollouts": 0, "tokens": 0}
    ledger: list[dict] = []

    def record(gen_step: int, stats: dict) -> None:
        accuracy, eval_time = float("nan"), 0.0
        if gen_step % cfg.eval_every == 0 or gen_step == steps_total:
            t0 = time.perf_counter()
            records = graded(sample_records(engine, eval_problems, task.prompt_template, evaluation,
                                            seed=eval_cfg.seed, dist=dist), eval_problems, grader)
            accuracy, eval_time = float(records["correct"].mean()), time.perf_counter() - t0
        row = {"gen_step": gen_step, "epoch": max(stream.drawn - 1, 0) // stream.epoch_size,
               "prompts_seen": stream.drawn,
               **totals, "rs_budget_used": totals["rollouts"] / (cfg.step_rollout_cap * max(gen_step, 1)),
               **dict.fromkeys(STEP_STATS, float("nan")), "lr": 0.0, **stats,
               **{f"time_{p}": timer.seconds[p] for p in PHASES}, "train_time": sum(timer.seconds.values()),
               "eval_accuracy": accuracy, "time_eval": eval_time + (ledger[-1]["time_eval"] if ledger else 0.0)}
        ledger.append(row)
        on_step(row)
        log.info("step %d/%d: reward %.3f, dead %.2f, eval %.3f, train %.1f s", gen_step, steps_total,
                 row["mean_reward"], row["dead_group_frac"], accuracy, row["train_time"])

    def snapshot(gen_step: int) -> dict:  # every process calls it (RNG states; sharded weights are gathered)
        return {"gen_step": gen_step, "model": full_state_dict(model),
                "optimizer": full_optimizer_state(model, optimizer),
                "scheduler": scheduler.state_dict(), "rng_per_process": dist.gather_objects(rng_states()),
                "stream": stream.state(), "totals": dict(totals), "ledger": list(ledger),
                "seconds": dict(timer.seconds)}

    first_step = 1
    if checkpointing and checkpointing.resume:
        state = checkpointing.resume
        load_full_states(model, optimizer, state["model"], state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.restore(state["stream"])
        totals.update(state["totals"])
        timer.seconds.update(state["seconds"])
        ledger.extend(state["ledger"])
        if len(state["rng_per_process"]) != dist.world:
            raise ValueError(f"the checkpoint was saved by {len(state['rng_per_process'])} processes; resume it with "
                             f"as many (this run has {dist.world})")
        set_rng_states(state["rng_per_process"][dist.rank])
        engine.sync(model)
        for row in ledger:
            on_step(row)
        first_step = state["gen_step"] + 1
        log.info("resumed after generation step %d of %d", state["gen_step"], steps_total)
    else:
        record(0, {})
    for gen_step in range(first_step, steps_total + 1):
        lr_used = scheduler.get_last_lr()[0]
        rollouts, generated, generated_tokens = source.step(cfg.generation_batch_prompts, arm.resample,
                                                            cfg.step_rollout_cap, share, dist)
        samples, rewards = rollouts.samples, rollouts.rewards
        advantages = grpo.group_advantages(rewards, G, cfg.adv_eps, cfg.adv_std).to(model.device)
        dead = grpo.dead_groups(rewards, G)
        local_q = Q // dist.world  # this process's whole groups of each mini-batch of Q
        minibatches = [list(range(first * G, (first + local_q) * G))  # a group is never split
                       for first in range(0, len(rollouts.prompt_rows), local_q)]
        updated = [rows_to_update(rows, dead, G, cfg.skips_dead_groups) for rows in minibatches]
        engine.release()  # the engine's KV cache makes room for the old log-probs and the update
        with timer("old_logprob"), out_of_memory_names_the_budget(cfg, gen_step, "old log-probs"):
            needed = sorted(set().union(*updated))
            old_logp = frozen_logprobs(model, samples, Forward.of(cfg), pad, needed)
            ref_logp = frozen_logprobs(reference, samples, Forward.of(cfg), pad) if reference else None
        updates: list[dict] = []
        informative: list[tuple[int, int]] = []
        with timer("update"), out_of_memory_names_the_budget(cfg, gen_step, "update"):
            for _ in range(cfg.ppo_epochs):
                for rows, run_rows in zip(minibatches, updated):
                    live = [g for g in range(rows[0] // G, rows[-1] // G + 1) if not dead[g]]
                    sizes = dist.sum([len(rows), sum(len(samples.response_ids[i]) for i in rows), len(live),
                                      sum(len(samples.response_ids[g * G + j]) for g in live for j in range(G))])
                    informative.append((float(sizes[2]), float(sizes[3])))
                    try:
                        # The whole mini-batch's sequences and tokens (dead groups' included), over all processes:
                        # the normalisers of grpo.aggregate.
                        updates.append(update_minibatch(trained, optimizer, samples, run_rows, old_logp, ref_logp,
                                                        advantages, cfg, task.max_new_tokens, pad,
                                                        minibatch=(int(sizes[0]), int(sizes[1])), world=dist.world))
                    except NonFiniteError as error:
                        raise NonFiniteError(f"generation step {gen_step}: {error}; training stopped before the "
                                             f"optimizer step (the last checkpoint, if any, is kept)") from None
                    totals["opt_steps"] += 1
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)  # no gradients held while the engine generates
        with timer("sync"):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the update's cached blocks go back to the device before vLLM wakes
            engine.resume()
            engine.sync(model)
        # The step's telemetry over all processes: sums of every count and token-weighted total.
        sums = ("tokens", "clip_high", "clip_low", "clip_dual", "entropy_sum", "kl_sum")
        total = dict(zip(("generated", "generated_tokens", "rewards", "rollouts", "response_tokens", "dead", "groups",
                          "adv_abs", "logprob_gap", *sums), dist.sum([
            generated, generated_tokens, float(rewards.sum()), len(rewards), samples.num_tokens, float(dead.sum()),
            len(dead), float(advantages.abs().sum()), logprob_gap(samples.select(needed), old_logp[needed]),
            *(sum(u.get(k, 0.0) for u in updates) for k in sums)]).tolist()))
        totals["rollouts"] += int(total["generated"])
        totals["tokens"] += int(total["generated_tokens"])
        record(gen_step, {
            "lr": lr_used,
            "mean_reward": total["rewards"] / total["rollouts"],
            "dead_group_frac": total["dead"] / total["groups"],
            "informative_prompts_per_update": float(np.mean([p for p, _ in informative])),
            "informative_tokens_per_update": float(np.mean([t for _, t in informative])),
            "adv_abs_mean": total["adv_abs"] / total["rollouts"],
            **{f"clip_frac_{k}": total[f"clip_{k}"] / total["tokens"] for k in ("high", "low", "dual")},
            "entropy": total["entropy_sum"] / total["tokens"],
            "grad_norm": float(np.mean([u["grad_norm"] for u in updates])),
            "kl": total["kl_sum"] / total["tokens"] if reference else float("nan"),
            "mean_response_tokens": total["response_tokens"] / total["rollouts"],
            "engine_logprob_gap": total["logprob_gap"] / dist.world,
        })
        if checkpointing and checkpointing.every and gen_step % checkpointing.every == 0 and gen_step < steps_total:
            state = snapshot(gen_step)  # whole on the first process, which saves it
            if dist.is_main:
                checkpointing.save(state)
    return pd.DataFrame(ledger)

