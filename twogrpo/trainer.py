"""The GRPO training loop, structured as verl runs it (paper v2 App. C.1, v3 App. D.1).

Per generation step (train_grpo): generate G rollouts for each prompt of the generation batch and grade them
(twogrpo.rollouts; 2-GRPO+RS replaces groups whose rewards are all equal by groups of new prompts, within 16-GRPO's
rollout budget), compute group advantages, compute "old" (and reference) log-probs with the models before any update,
make `ppo_epochs` passes over the batch in optimizer mini-batches of Q prompts (groups never split), step the LR
scheduler once, and give the engine the new weights (Training.step). The run's state and its checkpoint:
twogrpo.run_state; the step's statistics: twogrpo.telemetry; the forward passes: twogrpo.forward.

What travels together is bundled: a run's settings (TrainRun), the policy and its engine (Policy), the problems
(TrainData), what every optimizer step uses (Learner), and what the loss reads of a step's rollouts (Scored).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch

from twogrpo import grpo
from twogrpo.checkpoint import Checkpointing
from twogrpo.config import ArmConfig, EvaluateConfig, Params, TaskConfig, TrainConfig
from twogrpo.distributed import Dist, is_sharded, local_value, process_seed
from twogrpo.evaluation import sample_records
from twogrpo.forward import (
    Forward,
    balanced_partitions,
    collate,
    frozen_logprobs,
    kl_to_base,
    logprobs,
    micro_batches,
    packs,
)
from twogrpo.grading import Grader, graded
from twogrpo.optim import optimizer_with_warmup
from twogrpo.progress import Progress
from twogrpo.rollouts import PromptStream, RolloutSource
from twogrpo.run_state import RunState
from twogrpo.sampling import Engine, Samples, Sampling
from twogrpo.telemetry import STEP_STATS, PhaseTimer, StepTelemetry, UpdateGeometry

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


@dataclass(frozen=True)
class TrainRun:
    """One training run's settings: the task, the train section, the arm, the evaluation's sampling (in-training
    evaluation), the seed, and the grader of the rewards and the in-training evaluation (twogrpo.grading)."""

    task: TaskConfig
    cfg: TrainConfig
    arm: ArmConfig
    evaluate: EvaluateConfig
    seed: int
    grader: Grader = "math-verify"

    @classmethod
    def of(cls, params: Params, arm: str, seed: int) -> TrainRun:
        """Arm `arm` with seed `seed`, as params.yaml sets the study."""
        return cls(params.task, params.train, params.train.arm(arm), params.evaluate, seed, params.grading.reward)

    @property
    def steps_total(self) -> int:
        return self.cfg.steps_per_epoch * self.cfg.epochs


@dataclass(frozen=True)
class Policy:
    """The policy being trained (in place), its tokenizer, and the engine (HF or vLLM) made from the same weights."""

    model: torch.nn.Module
    tokenizer: object
    engine: Engine


@dataclass(frozen=True)
class TrainData:
    train: pd.DataFrame  # the train problems (Problems): prompts are drawn from its first train.prompts rows
    validation: pd.DataFrame  # the in-training evaluation reads its first train.eval_problems of train.eval_benchmark


@dataclass
class Learner:
    """What every optimizer step of a run uses: the trained module (DDP- or FSDP-wrapped over several processes),
    its optimizer, the train settings, the response horizon that seq-mean-token-sum-norm divides by
    (task.max_new_tokens), the pad token id, and the processes."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    horizon: int
    pad: int
    dist: Dist = field(default_factory=Dist)
    geometry: UpdateGeometry = field(default_factory=UpdateGeometry)  # the last update, for the next one's cosine


@dataclass(frozen=True)
class Scored:
    """What the loss reads of a generation step's rollouts ([R] each): the advantages, and the log-probs of the
    policy before the update ("old") and of the reference model (None without a KL term), [R, tokens]."""

    samples: Samples
    advantages: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None = None


def update_minibatch(learner: Learner, scored: Scored, rows: list[int],
                     minibatch: tuple[int, int] | None = None) -> dict[str, float]:
    """One optimizer step on one mini-batch of whole groups; returns token counts and sums for the telemetry.

    `rows` are the rollouts it runs on: this process's share of the mini-batch, less the dead groups' rollouts when
    they are skipped (rows_to_update); `minibatch` is the whole mini-batch's (sequences, response tokens) that the
    loss is normalised by (default: `rows`'). Over several processes the loss is multiplied by the process count
    because DDP and FSDP average gradients: the update is the one a single process would make on the whole
    mini-batch. The telemetry (entropy, clip counts) covers the tokens of `rows`."""
    model, cfg, samples, world = learner.model, learner.cfg, scored.samples, learner.dist.world
    model.train()
    tokens = sum(len(samples.response_ids[i]) for i in rows)
    sequences, total_tokens = minibatch or (len(rows), tokens)
    stats: dict[str, float] = defaultdict(float)
    learner.optimizer.zero_grad(set_to_none=True)
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
        batch = collate(samples, part, learner.pad, device, packed)
        mask = batch.response_mask
        # DDP reduces the gradients in every backward outside no_sync: here only in the last micro-batch, so each
        # process reduces once per step however many micro-batches its rows make (with dead groups skipped, the
        # processes' counts differ, and unequal reductions would hang). FSDP reduce-scatters in every backward; its
        # processes run equally many (micro_batches pads them).
        with model.no_sync() if world > 1 and not sharded and k < len(parts) - 1 else nullcontext():
            with forward.autocast(device):
                logp, entropy = logprobs(model, batch, entropy_grad=bool(cfg.entropy_coef))
            terms, clipped = grpo.policy_loss_terms(logp, scored.old_logp[part, : batch.width],
                                                    scored.advantages[part], cfg.clip_low, cfg.clip_high,
                                                    cfg.clip_ratio_c)
            agg = partial(grpo.aggregate, mask=mask, mode=cfg.loss_agg, minibatch_sequences=sequences,
                          minibatch_tokens=total_tokens, horizon=learner.horizon, micro_batch=micro_batch)
            loss = agg(terms)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * agg(entropy)
            if scored.ref_logp is not None:
                kl = grpo.low_var_kl(logp, scored.ref_logp[part, : batch.width])
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
    weights = list(model.parameters())
    before = UpdateGeometry.snapshot(weights)
    learner.optimizer.step()
    stats["update_size"], stats["update_cosine"] = learner.geometry.measure(weights, before, learner.dist)
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
    group_size: int

    @classmethod
    def of(cls, samples: Samples, rewards: torch.Tensor, cfg: TrainConfig, group_size: int, local_prompts: int,
           device: torch.device) -> GenerationBatch:
        """From this process's groups (prompt-major, G per group): mini-batches of whole groups, in order."""
        G = group_size
        dead = grpo.dead_groups(rewards, G).repeat_interleave(G)
        minibatches = [list(range(first * G, (first + local_prompts) * G))
                       for first in range(0, len(rewards) // G, local_prompts)]
        return cls(samples, rewards, grpo.group_advantages(rewards, G, cfg.adv_eps, cfg.adv_std).to(device), dead,
                   minibatches, [rows_to_update(rows, dead, cfg.skips_dead_groups) for rows in minibatches], G)

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
                               [rows_to_update(rows, dead, cfg.skips_dead_groups) for rows in minibatches],
                               self.group_size)

    def _portable(self) -> dict[str, list]:
        s = self.samples
        return {"prompt_ids": s.prompt_ids, "response_ids": s.response_ids, "texts": s.texts, "truncated": s.truncated,
                "logprobs": s.logprobs or [None] * len(s.texts), "rewards": self.rewards.tolist(),
                "advantages": self.advantages.tolist(), "dead": self.dead.tolist()}

    def informative_sizes(self, rows: list[int], dist: Dist) -> list[float]:
        """Over all processes: a mini-batch's sequences and response tokens (dead groups' included: grpo.aggregate's
        normalisers), and its informative prompts (rollouts / G) and their tokens (telemetry)."""
        lengths = [len(r) for r in self.samples.response_ids]
        live = [i for i in rows if not self.dead[i]]
        return dist.sum([len(rows), sum(lengths[i] for i in rows), len(live) / self.group_size,
                         sum(lengths[i] for i in live)]).tolist()


def update_on_batch(learner: Learner, state: RunState, batch: GenerationBatch, scored: Scored,
                    telemetry: StepTelemetry, gen_step: int) -> None:
    """`ppo_epochs` passes of one optimizer step per mini-batch, then one scheduler step."""
    cfg = learner.cfg
    for _ in range(cfg.ppo_epochs):
        for rows, run_rows in zip(batch.minibatches, batch.updated, strict=True):
            sequences, tokens, live_prompts, live_tokens = batch.informative_sizes(rows, learner.dist)
            try:
                stats = update_minibatch(learner, scored, run_rows, minibatch=(int(sequences), int(tokens)))
            except NonFiniteError as error:
                lr = learner.optimizer.param_groups[0]["lr"]
                raise NonFiniteError(
                    f"generation step {gen_step}: {error}; training stopped before the optimizer step (the last "
                    f"checkpoint, if any, is kept). The settings most likely at fault: the learning rate {lr:g} "
                    f"(train.reference_lr={cfg.reference_lr:g} and the arm's lr_scaling and lr_factor), "
                    f"train.grad_clip={cfg.grad_clip:g}, train.clip_high={cfg.clip_high:g}, "
                    f"train.adv_eps={cfg.adv_eps:g}") from None
            telemetry.add_update(stats, (live_prompts, live_tokens))
            state.totals["opt_steps"] += 1
    state.scheduler.step()
    learner.optimizer.zero_grad(set_to_none=True)  # no gradients held while the engine generates


@dataclass
class StepLog:
    """Appends a ledger row per generation step (TrainSteps), with the in-training evaluation every eval_every steps
    and at the last, and hands it to on_step."""

    state: RunState
    evaluate: Callable[[], tuple[float, float]]  # the current policy's accuracy and KL to the base (Training.validate)
    run: TrainRun
    on_step: Callable[[dict], None]
    progress: Progress  # generation steps; a bar on a terminal, the time left in each line

    def record(self, gen_step: int, stats: dict) -> None:
        state, ledger, cfg = self.state, self.state.ledger, self.run.cfg
        (accuracy, kl), eval_time = (float("nan"), float("nan")), 0.0
        if gen_step % cfg.eval_every == 0 or gen_step == self.run.steps_total:
            t0 = time.perf_counter()
            (accuracy, kl), eval_time = self.evaluate(), time.perf_counter() - t0
        row = {"gen_step": gen_step, "epoch": max(state.stream.drawn - 1, 0) // state.stream.epoch_size,
               "prompts_seen": state.stream.drawn, **state.totals,
               "rs_budget_used": state.totals["rollouts"] / (cfg.step_rollout_cap * max(gen_step, 1)),
               **dict.fromkeys(STEP_STATS, float("nan")), "lr": 0.0, **stats,
               **state.timer.columns(), "eval_accuracy": accuracy, "eval_kl": kl,
               "time_eval": eval_time + (ledger[-1]["time_eval"] if ledger else 0.0)}
        ledger.append(row)
        self.on_step(row)
        if gen_step:
            self.progress.advance()
        log.info("step %d/%d: reward %.3f, dead %.2f, eval %.3f, train %.1f s %s", gen_step, self.run.steps_total,
                 row["mean_reward"], row["dead_group_frac"], accuracy, row["train_time"], self.progress.left())


def validation_records(engine: Engine, problems: pd.DataFrame, run: TrainRun, dist: Dist | None = None,
                       kept: Samples | None = None) -> pd.DataFrame:
    """The current policy's graded samples (ValidationSamples) on `problems`, train.eval_samples per problem at the
    evaluation's sampling, each chunk seeded by its position (twogrpo.evaluation.sample_records); with `kept`, this
    process's samples are appended to it."""
    evaluate = run.evaluate
    sampling = Sampling(evaluate.temperature, evaluate.top_p, evaluate.top_k, evaluate.max_new_tokens,
                        n=run.cfg.eval_samples)
    records = sample_records(engine, problems, run.task.prompt_template, sampling, seed=evaluate.seed, dist=dist,
                             kept=kept)
    return graded(records, problems, run.grader)[["benchmark", "problem_id", "sample", "correct"]]


class Training:
    """A run's moving parts, built in this order from the seeded RNG: the frozen base (with a KL term or
    train.eval_kl), the trained module and its optimizer, the run state, the rollout source."""

    def __init__(self, run: TrainRun, policy: Policy, data: TrainData, dist: Dist) -> None:
        cfg, model = run.cfg, policy.model
        self.run, self.policy, self.dist = run, policy, dist
        self.share = (dist.share(cfg.generation_batch_prompts, cfg.prompts_per_minibatch(run.arm))
                      if dist.world > 1 else None)
        self.base = (copy.deepcopy(model).eval().requires_grad_(False)  # never sharded
                     if cfg.kl_coef or cfg.eval_kl else None)
        trained = dist.prepare(model, cfg.precision)  # DDP or FSDP over several processes; `model` generates, scores
        optimizer, scheduler = optimizer_with_warmup(trained.parameters(), cfg.lr(run.arm), cfg.weight_decay,
                                                     cfg.warmup_gen_steps, run.arm.optimizer)
        self.learner = Learner(trained, optimizer, cfg, run.task.max_new_tokens, policy.tokenizer.pad_token_id, dist)
        self.state = RunState(model, optimizer, scheduler,
                              PromptStream(cfg.prompts, run.seed, cfg.generation_batch_prompts,
                                           cfg.data_seed if cfg.data_order == "verl" else None), PhaseTimer())
        self.source = RolloutSource(policy.engine, data.train, self.state.stream, run.task.prompt_template,
                                    Sampling(cfg.temperature, cfg.top_p, cfg.top_k, run.task.max_new_tokens,
                                             n=run.arm.group_size), self.state.timer, run.grader)
        self.eval_problems = data.validation[data.validation["dataset"] == cfg.eval_benchmark].iloc[
            : cfg.eval_problems]

    def validate(self) -> tuple[float, float]:
        """The current policy's accuracy on the in-training problems, and its KL to the base on its responses there
        (forward.kl_to_base; NaN without train.eval_kl)."""
        cfg, dist = self.run.cfg, self.dist
        kept = Samples([], [], [], []) if cfg.eval_kl else None
        records = validation_records(self.policy.engine, self.eval_problems, self.run, dist, kept)
        kl = float("nan")
        if kept is not None:
            every = Samples([], [], [], [])  # every process's samples, so that sharded forward passes match
            for part in dist.gather_objects(kept):
                every.extend(part)
            kl = kl_to_base(self.policy.model, self.base, every, Forward.of(cfg), self.learner.pad)
        return float(records["correct"].mean()), kl

    def step(self, gen_step: int) -> dict:
        """One generation step; returns its statistics (telemetry.STEP_STATS)."""
        run, cfg, dist, state, model = self.run, self.run.cfg, self.dist, self.state, self.policy.model
        G, engine, forward = run.arm.group_size, self.policy.engine, Forward.of(cfg)
        lr = state.scheduler.get_last_lr()[0]
        telemetry = StepTelemetry()
        rollouts, generated, generated_tokens = self.source.step(cfg.generation_batch_prompts, run.arm.resample,
                                                                 cfg.step_rollout_cap, self.share, dist)
        batch = GenerationBatch.of(rollouts.samples, rollouts.rewards, cfg, G,
                                   cfg.prompts_per_minibatch(run.arm) // dist.world, model.device)
        dead = grpo.dead_groups(rollouts.rewards, G)  # this process's own groups, for the telemetry
        engine.release()  # the engine's KV cache makes room for the old log-probs and the update
        with state.timer("old_logprob"), out_of_memory_names_the_budget(cfg, gen_step, "old log-probs"):
            if cfg.balance_batch and dist.world > 1:
                batch = batch.balanced(cfg, dist)
            needed = sorted(set().union(*batch.updated))
            pad = self.learner.pad
            old_logp = frozen_logprobs(model, batch.samples, forward, pad, needed)
            ref_logp = frozen_logprobs(self.base, batch.samples, forward, pad) if cfg.kl_coef else None
        scored = Scored(batch.samples, batch.advantages, old_logp, ref_logp)
        with state.timer("update"), out_of_memory_names_the_budget(cfg, gen_step, "update"):
            update_on_batch(self.learner, state, batch, scored, telemetry, gen_step)
        with state.timer("sync"):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the update's cached blocks go back to the device before vLLM wakes
            engine.resume()
            engine.sync(model)
        telemetry.add(generated=generated, generated_tokens=generated_tokens, rewards=float(batch.rewards.sum()),
                      rollouts=len(batch.rewards), response_tokens=batch.samples.num_tokens,
                      dead=float(dead.sum()), groups=len(dead), adv_abs=float(batch.advantages.abs().sum()),
                      logprob_gap=logprob_gap(batch.samples.select(needed), scored.old_logp[needed]))
        total = telemetry.reduce(dist)
        state.totals["rollouts"] += int(total["generated"])
        state.totals["tokens"] += int(total["generated_tokens"])
        return telemetry.statistics(total, dist.world, lr, with_kl=cfg.kl_coef > 0)


def train_grpo(run: TrainRun, policy: Policy, data: TrainData, on_step: Callable[[dict], None] = lambda row: None,
               checkpointing: Checkpointing | None = None, dist: Dist | None = None) -> pd.DataFrame:
    """Train `policy.model` in place; return the ledger (TrainSteps), one row per generation step, row 0 before
    training. With `checkpointing`, the whole run state is saved every `every` generation steps, and a run given a
    snapshot continues after its step (on the CPU with the HF engine: the final weights and ledger of an
    uninterrupted run, the seconds lost to the interruption not counted); `on_step` sees the resumed rows again.
    With `dist` over several processes (twogrpo.distributed), each process generates and trains on its share of
    every mini-batch, and the ledger describes the whole run on every process, with the first process's times. A
    non-finite loss or gradient raises NonFiniteError."""
    dist = dist or Dist()
    torch.manual_seed(process_seed(run.seed, dist.rank))
    training = Training(run, policy, data, dist)
    state, last = training.state, run.steps_total
    first_step = 1
    if checkpointing and checkpointing.resume:
        first_step = state.restore(checkpointing.resume, dist) + 1
        policy.engine.sync(policy.model)
        for row in state.ledger:
            on_step(row)
        log.info("resumed after generation step %d of %d", first_step - 1, last)
    steps = StepLog(state, training.validate, run, on_step, Progress(last, "GRPO steps", done=first_step - 1))
    if first_step == 1:
        steps.record(0, {})
    for gen_step in range(first_step, last + 1):
        steps.record(gen_step, training.step(gen_step))
        if checkpointing and checkpointing.due(gen_step, last):
            snapshot = state.snapshot(gen_step, dist)  # whole on the first process, which saves it
            if dist.is_main:
                checkpointing.save(snapshot)
    steps.progress.close()
    return pd.DataFrame(state.ledger)
