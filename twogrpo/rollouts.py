"""Where rollouts come from: prompts in verl's dataloader order, generated and graded in groups of G, and for
2-GRPO+RS dead groups refilled from the same stream within 16-GRPO's budget."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twogrpo import grpo
from twogrpo.distributed import Dist
from twogrpo.grading import Grader
from twogrpo.grading import rewards as grade_rewards
from twogrpo.policy import render_prompts
from twogrpo.sampling import Engine, Samples, Sampling
from twogrpo.telemetry import PhaseTimer


class PromptStream:
    """Prompt indices as verl's dataloader gives them (shuffle with a seeded generator, drop_last): epoch after epoch a
    fresh permutation of the n prompts, cut to whole batches, so each epoch leaves out a different remainder and
    over the epochs every prompt is seen. 2-GRPO+RS draws its refills from the same stream, ahead of the batches.

    The permutations come from numpy, seeded by the run's seed (data_seed None); or, with a data_seed, from verl's
    own sampler: torch's RandomSampler over a generator seeded by data.seed (the same for every run), which draws
    two permutations per epoch and uses the first (verl/trainer/main_ppo.py create_rl_sampler)."""

    def __init__(self, n: int, seed: int, batch: int = 1, data_seed: int | None = None) -> None:
        self.n = n
        self.epoch_size = n // batch * batch
        self.rng = np.random.default_rng(seed)
        self.sampler = None if data_seed is None else torch.Generator().manual_seed(data_seed)
        self.pending: list[int] = []
        self.drawn = 0

    def _permutation(self) -> list[int]:
        if self.sampler is None:
            return self.rng.permutation(self.n).tolist()
        order = torch.randperm(self.n, generator=self.sampler).tolist()
        torch.randperm(self.n, generator=self.sampler)  # RandomSampler's second draw, cut to num_samples % n = 0
        return order

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.pending:
                self.pending = self._permutation()[: self.epoch_size]
            out.append(self.pending.pop(0))
        self.drawn += k
        return out

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "pending": list(self.pending), "drawn": self.drawn,
                "sampler": None if self.sampler is None else self.sampler.get_state()}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        if self.sampler is not None:
            self.sampler.set_state(state["sampler"])
        self.pending, self.drawn = list(state["pending"]), state["drawn"]


@dataclass
class Rollouts:
    """One generation step's groups: the prompt of each group, its G samples, their rewards."""

    prompt_rows: list[int]  # [R/G] rows of the prompt table
    samples: Samples  # [R]
    rewards: torch.Tensor  # [R]


class RolloutSource:
    """Draws prompts, generates and grades groups; with `resample`, refills groups whose rewards are all equal."""

    def __init__(self, engine: Engine, prompts: pd.DataFrame, stream: PromptStream, template: str,
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
