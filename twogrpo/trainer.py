"""The GRPO training loop, structured as verl runs it (paper v2 App. C.1, v3 App. D.1).

Per generation step (train_grpo): generate G rollouts for each prompt of the generation batch and grade them
(twogrpo.rollouts; 2-GRPO+RS replaces groups whose rewards are all equal by groups of new prompts, within 16-GRPO's
rollout budget), compute group advantages, compute "old" (and reference) log-probs with the models before any update,
make `ppo_epochs` passes over the batch in optimizer mini-batches of Q prompts (groups never split), step the LR
scheduler once, and give the engine the new weights. The run's state and its checkpoint: twogrpo.run_state; the
step's statistics: twogrpo.telemetry; the forward passes: twogrpo.forward.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch

from twogrpo import grpo
from twogrpo.checkpoint import Checkpointing
from twogrpo.config import ArmConfig, EvaluateConfig, TaskConfig, TrainConfig
from twogrpo.distributed import Dist, is_sharded, local_value, process_seed
from twogrpo.evaluation import sample_records
from twogrpo.forward import Forward, balanced_partitions, collate, frozen_logprobs, logprobs, micro_batches, packs
from twogrpo.grading import Grader, graded
from twogrpo.rollouts import PromptStream, RolloutSource
from twogrpo.run_state import RunState
from twogrpo.sampling import Engine, Samples, Sampling
from twogrpo.telemetry import STEP_STATS, PhaseTimer, StepTelemetry

log = logging.getLogger(__name__)


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


def rows_to_update(rows: list[int], dead: torch.Tensor, skip_dead: bool) -> list[int]:
    """The rollouts of a mini-batch that the update runs forward and backward on: all, or with skip_dead those of
    informative groups only (`dead`: [R], the rollouts of groups whose rewards are all equal). A mini-batch of dead
    groups keeps one row: its gradient is zeros rather than missing (AdamW still decays and moves by its momentum, as
    in the full pass), and every process takes part in DDP's gradient all-reduce."""
    if not skip_dead:
        return rows
    return [i for i in rows if not dead[i]] or rows[:1]


def logprob_gap(samples: Samples, trainer_logp: torch.Tensor) -> float:
    """Mean |engine - trainer| log-prob over the sampled tokens (a diagnostic; NaN when the engine gives none)."""
    if samples.logprobs is None:
        return float("nan")
    gaps = [abs(e - t) for row, engine in enumerate(samples.logprobs)
            for e, t in zip(engine, trainer_logp[row, : len(engine)].tolist(), strict=True)]
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
    passes, sizes = [], []  # each forward pass, and the (rollouts, tokens) of the micro-batch it is part of
    for micro in forward.split(samples, rows):
        for chunk in forward.passes(samples, micro, packed):
            passes.append(chunk)
            sizes.append((len(micro), sum(len(samples.response_ids[i]) for i in micro)))
    parts = micro_batches(passes, sharded)
    for k, (part, real) in enumerate(parts):
        micro_batch = sizes[k] if real else None
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
                          minibatch_tokens=total_tokens, horizon=horizon, micro_batch=micro_batch)
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


@dataclass
class GenerationBatch:
    """One generation step's rollouts on this process, ready for the update."""

    samples: Samples  # [R]
    rewards: torch.Tensor  # [R]
    advantages: torch.Tensor  # [R]
    dead: torch.Tensor  # [R] rollouts of groups whose rewards are all equal (zero advantage)
    minibatches: list[list[int]]  # this process's rollouts of each optimizer mini-batch
    updated: list[list[int]]  # the rollouts each update runs on (rows_to_update)

    @classmethod
    def of(cls, samples: Samples, rewards: torch.Tensor, cfg: TrainConfig, group_size: int, local_prompts: int,
           device: torch.device) -> GenerationBatch:
        """From this process's groups (prompt-major, G per group): mini-batches of whole groups, in order."""
        G = group_size
        dead = grpo.dead_groups(rewards, G).repeat_interleave(G)
        minibatches = [list(range(first * G, (first + local_prompts) * G))
                       for first in range(0, len(rewards) // G, local_prompts)]
        return cls(samples, rewards, grpo.group_advantages(rewards, G, cfg.adv_eps, cfg.adv_std).to(device), dead,
                   minibatches, [rows_to_update(rows, dead, cfg.skips_dead_groups) for rows in minibatches])

    def balanced(self, cfg: TrainConfig, dist: Dist) -> GenerationBatch:
        """verl's balance_batch (verl/trainer/ppo/ray_trainer.py, _balance_batch): the whole generation batch, in its
        order (mini-batch by mini-batch, each process's share in rank order: Dist.share), is split into one
        partition per process of equally many rollouts and about equal prompt + response tokens; each process's
        mini-batches are then consecutive chunks of its partition, in order. A group can so be split over processes
        and mini-batches; its advantage was computed whole, before."""
        every = dist.gather_objects(self._portable())
        size = len(self.minibatches[0])  # every process's mini-batches hold as many rollouts
        order = [(r, i) for m in range(len(self.minibatches)) for r in range(dist.world)
                 for i in range(m * size, (m + 1) * size)]
        lengths = [len(every[r]["prompt_ids"][i]) + len(every[r]["response_ids"][i]) for r, i in order]
        part = [order[j] for j in balanced_partitions(lengths, dist.world, equal_size=True)[dist.rank]]

        def pick(field: str) -> list:
            return [every[r][field][i] for r, i in part]

        samples = Samples(pick("prompt_ids"), pick("response_ids"), pick("texts"), pick("truncated"),
                          None if self.samples.logprobs is None else pick("logprobs"))
        dead = torch.tensor(pick("dead"))
        minibatches = [list(range(first, first + size)) for first in range(0, len(part), size)]
        return GenerationBatch(samples, torch.tensor(pick("rewards")),
                               torch.tensor(pick("advantages"), device=self.advantages.device), dead, minibatches,
                               [rows_to_update(rows, dead, cfg.skips_dead_groups) for rows in minibatches])

    def _portable(self) -> dict[str, list]:
        s = self.samples
        return {"prompt_ids": s.prompt_ids, "response_ids": s.response_ids, "texts": s.texts, "truncated": s.truncated,
                "logprobs": s.logprobs or [None] * len(s.texts), "rewards": self.rewards.tolist(),
                "advantages": self.advantages.tolist(), "dead": self.dead.tolist()}

    def informative_sizes(self, rows: list[int], group_size: int, dist: Dist) -> list[float]:
        """Over all processes: a mini-batch's sequences and response tokens (dead groups' included: grpo.aggregate's
        normalisers), and its informative prompts (rollouts / G) and their tokens (telemetry)."""
        lengths = [len(r) for r in self.samples.response_ids]
        live = [i for i in rows if not self.dead[i]]
        return dist.sum([len(rows), sum(lengths[i] for i in rows), len(live) / group_size,
                         sum(lengths[i] for i in live)]).tolist()


def update_on_batch(trained, state: RunState, batch: GenerationBatch, old_logp: torch.Tensor,
                    ref_logp: torch.Tensor | None, cfg: TrainConfig, horizon: int, pad: int, dist: Dist,
                    telemetry: StepTelemetry, gen_step: int, group_size: int) -> None:
    """`ppo_epochs` passes of one optimizer step per mini-batch, then one scheduler step."""
    for _ in range(cfg.ppo_epochs):
        for rows, run_rows in zip(batch.minibatches, batch.updated, strict=True):
            sequences, tokens, live_prompts, live_tokens = batch.informative_sizes(rows, group_size, dist)
            try:
                stats = update_minibatch(trained, state.optimizer, batch.samples, run_rows, old_logp, ref_logp,
                                         batch.advantages, cfg, horizon, pad, minibatch=(int(sequences), int(tokens)),
                                         world=dist.world)
            except NonFiniteError as error:
                lr = state.optimizer.param_groups[0]["lr"]
                raise NonFiniteError(
                    f"generation step {gen_step}: {error}; training stopped before the optimizer step (the last "
                    f"checkpoint, if any, is kept). The settings most likely at fault: the learning rate {lr:g} "
                    f"(train.reference_lr={cfg.reference_lr:g} and the arm's lr_scaling), train.grad_clip="
                    f"{cfg.grad_clip:g}, train.clip_high={cfg.clip_high:g}, train.adv_eps={cfg.adv_eps:g}") from None
            telemetry.add_update(stats, (live_prompts, live_tokens))
            state.totals["opt_steps"] += 1
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)  # no gradients held while the engine generates


@dataclass
class StepLog:
    """Appends a ledger row per generation step (TrainSteps), with the in-training evaluation every eval_every steps
    and at the last, and hands it to on_step."""

    state: RunState
    evaluate: Callable[[], float]  # accuracy of the current policy on the in-training problems
    eval_every: int
    steps_total: int
    step_rollout_cap: int
    on_step: Callable[[dict], None]

    def record(self, gen_step: int, stats: dict) -> None:
        state, ledger = self.state, self.state.ledger
        accuracy, eval_time = float("nan"), 0.0
        if gen_step % self.eval_every == 0 or gen_step == self.steps_total:
            t0 = time.perf_counter()
            accuracy, eval_time = self.evaluate(), time.perf_counter() - t0
        row = {"gen_step": gen_step, "epoch": max(state.stream.drawn - 1, 0) // state.stream.epoch_size,
               "prompts_seen": state.stream.drawn, **state.totals,
               "rs_budget_used": state.totals["rollouts"] / (self.step_rollout_cap * max(gen_step, 1)),
               **dict.fromkeys(STEP_STATS, float("nan")), "lr": 0.0, **stats,
               **state.timer.columns(), "eval_accuracy": accuracy,
               "time_eval": eval_time + (ledger[-1]["time_eval"] if ledger else 0.0)}
        ledger.append(row)
        self.on_step(row)
        log.info("step %d/%d: reward %.3f, dead %.2f, eval %.3f, train %.1f s", gen_step, self.steps_total,
                 row["mean_reward"], row["dead_group_frac"], accuracy, row["train_time"])


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up counted in generation steps, then constant. Departure from verl/HF (which start at lr 0 and so
    waste the first generation step): step s uses lr * min(1, (s + 1) / warmup)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)


def validation_records(engine: Engine, problems: pd.DataFrame, task: TaskConfig, cfg: TrainConfig,
                       eval_cfg: EvaluateConfig, dist: Dist | None = None,
                       grader: Grader = "math-verify") -> pd.DataFrame:
    """The current policy's graded samples (ValidationSamples) on `problems`, train.eval_samples per problem at the
    evaluation's sampling, each chunk seeded by its position (twogrpo.evaluation.sample_records)."""
    sampling = Sampling(eval_cfg.temperature, eval_cfg.top_p, eval_cfg.top_k, eval_cfg.max_new_tokens,
                        n=cfg.eval_samples)
    records = sample_records(engine, problems, task.prompt_template, sampling, seed=eval_cfg.seed, dist=dist)
    return graded(records, problems, grader)[["benchmark", "problem_id", "sample", "correct"]]


def train_grpo(model, tokenizer, engine: Engine, prompts: pd.DataFrame, validation: pd.DataFrame, task: TaskConfig,
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
    and the in-training evaluation (twogrpo.grading), which reads the first train.eval_problems problems of
    train.eval_benchmark in `validation` (never the test set)."""
    dist = dist or Dist()
    torch.manual_seed(process_seed(seed, dist.rank))
    G, Q = arm.group_size, cfg.prompts_per_minibatch(arm)
    share = dist.share(cfg.generation_batch_prompts, Q) if dist.world > 1 else None
    reference = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef else None  # never sharded
    trained = dist.prepare(model, cfg.precision)  # DDP or FSDP over several processes; `model` generates and scores
    optimizer = torch.optim.AdamW(trained.parameters(), lr=cfg.lr(arm), weight_decay=cfg.weight_decay)
    state = RunState(model, optimizer, warmup_schedule(optimizer, cfg.warmup_gen_steps),
                     PromptStream(cfg.prompts, seed, cfg.generation_batch_prompts,
                                  cfg.data_seed if cfg.data_order == "verl" else None), PhaseTimer())
    source = RolloutSource(engine, prompts, state.stream, task.prompt_template,
                           Sampling(cfg.temperature, cfg.top_p, cfg.top_k, task.max_new_tokens, n=G), state.timer,
                           grader)
    eval_problems = validation[validation["dataset"] == cfg.eval_benchmark].iloc[: cfg.eval_problems]

    def accuracy() -> float:
        return float(validation_records(engine, eval_problems, task, cfg, eval_cfg, dist, grader)["correct"].mean())

    steps_total = cfg.steps_per_epoch * cfg.epochs
    steps = StepLog(state, accuracy, cfg.eval_every, steps_total, cfg.step_rollout_cap, on_step)
    pad, forward = tokenizer.pad_token_id, Forward.of(cfg)
    first_step = 1
    if checkpointing and checkpointing.resume:
        first_step = state.restore(checkpointing.resume, dist) + 1
        engine.sync(model)
        for row in state.ledger:
            on_step(row)
        log.info("resumed after generation step %d of %d", first_step - 1, steps_total)
    else:
        steps.record(0, {})
    for gen_step in range(first_step, steps_total + 1):
        lr = state.scheduler.get_last_lr()[0]
        telemetry = StepTelemetry()
        rollouts, generated, generated_tokens = source.step(cfg.generation_batch_prompts, arm.resample,
                                                            cfg.step_rollout_cap, share, dist)
        batch = GenerationBatch.of(rollouts.samples, rollouts.rewards, cfg, G, Q // dist.world, model.device)
        dead = grpo.dead_groups(rollouts.rewards, G)  # this process's own groups, for the telemetry
        engine.release()  # the engine's KV cache makes room for the old log-probs and the update
        with state.timer("old_logprob"), out_of_memory_names_the_budget(cfg, gen_step, "old log-probs"):
            if cfg.balance_batch and dist.world > 1:
                batch = batch.balanced(cfg, dist)
            needed = sorted(set().union(*batch.updated))
            old_logp = frozen_logprobs(model, batch.samples, forward, pad, needed)
            ref_logp = frozen_logprobs(reference, batch.samples, forward, pad) if reference else None
        with state.timer("update"), out_of_memory_names_the_budget(cfg, gen_step, "update"):
            update_on_batch(trained, state, batch, old_logp, ref_logp, cfg, task.max_new_tokens, pad, dist,
                            telemetry, gen_step, G)
        with state.timer("sync"):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the update's cached blocks go back to the device before vLLM wakes
            engine.resume()
            engine.sync(model)
        telemetry.add(generated=generated, generated_tokens=generated_tokens, rewards=float(batch.rewards.sum()),
                      rollouts=len(batch.rewards), response_tokens=batch.samples.num_tokens,
                      dead=float(dead.sum()), groups=len(dead),
                      adv_abs=float(batch.advantages.abs().sum()),
                      logprob_gap=logprob_gap(batch.samples.select(needed), old_logp[needed]))
        total = telemetry.reduce(dist)
        state.totals["rollouts"] += int(total["generated"])
        state.totals["tokens"] += int(total["generated_tokens"])
        steps.record(gen_step, telemetry.statistics(total, dist.world, lr, with_kl=reference is not None))
        if checkpointing and checkpointing.every and gen_step % checkpointing.every == 0 and gen_step < steps_total:
            snapshot = state.snapshot(gen_step, dist)  # whole on the first process, which saves it
            if dist.is_main:
                checkpointing.save(snapshot)
    return pd.DataFrame(state.ledger)
