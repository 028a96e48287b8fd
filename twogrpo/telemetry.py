"""What a generation step reports: seconds per phase (wall-clock, CPU, and waiting for a CPU), and named statistics
summed on every process and reduced over the processes once, as the ledger's columns (schema TrainSteps)."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from twogrpo.choices import PHASES
from twogrpo.distributed import Dist, local_shard

STEP_STATS = ("mean_reward", "dead_group_frac", "informative_prompts_per_update", "informative_tokens_per_update",
              "adv_abs_mean", "clip_frac_high", "clip_frac_low", "clip_frac_dual", "entropy", "grad_norm", "kl",
              "update_size", "update_cosine", "mean_response_tokens", "engine_logprob_gap")
# Counts and sums each process adds up over a step; every statistic is a ratio of their totals over all processes.
SUMS = ("generated", "generated_tokens", "rewards", "rollouts", "response_tokens", "dead", "groups", "adv_abs",
        "logprob_gap", "tokens", "clip_high", "clip_low", "clip_dual", "entropy_sum", "kl_sum")
UPDATE_SUMS = ("tokens", "clip_high", "clip_low", "clip_dual", "entropy_sum", "kl_sum")  # what each update returns


# The ledger's timing columns, seconds so far (PhaseTimer.columns): what differs between two runs of the same work.
TIMINGS = (*(f"time_{p}" for p in PHASES), "train_time", *(f"cpu_{p}" for p in PHASES), "train_cpu_time",
           "train_cpu_wait", "load_average", "time_eval")


def cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its children that have ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def waiting_seconds() -> float:
    """Seconds this process's live threads have spent ready to run but waiting for a CPU (the run-queue delay in
    Linux's /proc/<pid>/task/<tid>/schedstat); NaN where the kernel does not report it."""
    total = 0.0
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended meanwhile
    except (FileNotFoundError, IndexError, ValueError):
        return float("nan")
    return total / 1e9


class PhaseTimer:
    """Per phase, accumulated: wall-clock seconds, this process's CPU seconds (`cpu_seconds`) and its threads'
    seconds waiting for a CPU (`waiting_seconds`). CPU seconds alone do not tell a quiet machine from a busy one:
    beside a CPU-burning process, torch's threads spin and the CPU time grows with the wall-clock; the wait does not
    lie."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.waited: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        start, cpu, waited = time.perf_counter(), cpu_seconds(), waiting_seconds()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.cpu[phase] += cpu_seconds() - cpu
            self.waited[phase] += max(waiting_seconds() - waited, 0.0)  # a thread that ended takes its wait

    def columns(self) -> dict[str, float]:
        """The ledger's timing columns (TIMINGS but time_eval): seconds so far per phase, wall-clock and CPU, their
        totals, the seconds waited for a CPU, and the machine's load average now."""
        return {**{f"time_{p}": self.seconds[p] for p in PHASES}, "train_time": sum(self.seconds[p] for p in PHASES),
                **{f"cpu_{p}": self.cpu[p] for p in PHASES}, "train_cpu_time": sum(self.cpu[p] for p in PHASES),
                "train_cpu_wait": sum(self.waited[p] for p in PHASES), "load_average": os.getloadavg()[0]}

    def state(self) -> dict[str, dict[str, float]]:
        return {"seconds": dict(self.seconds), "cpu": dict(self.cpu), "waited": dict(self.waited)}

    def restore(self, state: dict[str, dict[str, float]]) -> None:
        for name, values in state.items():
            getattr(self, name).update(values)


class StepTelemetry:
    """One generation step's statistics on this process: named sums (SUMS), the informative prompts and tokens of
    each update (already totals over the processes: they normalise the loss) and each update's gradient norm (the
    same on every process after the gradient reduction)."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(SUMS, 0.0)
        self.informative: list[tuple[float, float]] = []
        self.grad_norms: list[float] = []
        self.update_sizes: list[float] = []
        self.update_cosines: list[float] = []

    def add(self, **values: float) -> None:
        for name, value in values.items():
            self.sums[name] += value

    def add_update(self, stats: dict[str, float], informative: tuple[float, float]) -> None:
        self.add(**{name: stats.get(name, 0.0) for name in UPDATE_SUMS})
        self.grad_norms.append(stats["grad_norm"])
        self.update_sizes.append(stats["update_size"])
        self.update_cosines.append(stats["update_cosine"])
        self.informative.append(informative)

    def reduce(self, dist: Dist) -> dict[str, float]:
        """The sums over all processes, in one collective."""
        return dict(zip(SUMS, dist.sum([self.sums[name] for name in SUMS]).tolist(), strict=True))

    def statistics(self, total: dict[str, float], world: int, lr: float, with_kl: bool) -> dict[str, float]:
        """The step's STEP_STATS (and the lr it trained at) from the reduced sums."""
        return {
            "lr": lr,
            "mean_reward": total["rewards"] / total["rollouts"],
            "dead_group_frac": total["dead"] / total["groups"],
            "informative_prompts_per_update": float(np.mean([p for p, _ in self.informative])),
            "informative_tokens_per_update": float(np.mean([t for _, t in self.informative])),
            "adv_abs_mean": total["adv_abs"] / total["rollouts"],
            **{f"clip_frac_{k}": total[f"clip_{k}"] / total["tokens"] for k in ("high", "low", "dual")},
            "entropy": total["entropy_sum"] / total["tokens"],
            "grad_norm": float(np.mean(self.grad_norms)),
            "update_size": float(np.mean(self.update_sizes)),
            "update_cosine": float(np.mean(cosines)) if (cosines := [c for c in self.update_cosines
                                                                    if not np.isnan(c)]) else float("nan"),
            "kl": total["kl_sum"] / total["tokens"] if with_kl else float("nan"),
            "mean_response_tokens": total["response_tokens"] / total["rollouts"],
            "engine_logprob_gap": total["logprob_gap"] / world,
        }


class UpdateGeometry:
    """How each optimizer update moves the weights: its size relative to the weights, ||delta|| / ||theta after||, and
    its cosine with the update before it (NaN for a run's first update, and for the first after a resume, since the
    previous update is not checkpointed). AdamW moves each weight by about the learning rate whatever the gradient's
    size, so these show a step-size failure that the gradient norm cannot. The weights before the step and the last
    update are kept in host memory (two float32 copies of this process's share), off the GPU."""

    def __init__(self) -> None:
        self.previous: list[torch.Tensor] | None = None
        self.previous_moved = 0.0  # dot(previous, previous), this process's share: summed once, when it was the delta

    @staticmethod
    def snapshot(parameters: list[torch.Tensor]) -> list[torch.Tensor]:
        """This process's share of the weights (a sharded model's local shards), in float32 host memory."""
        return [local_shard(p).detach().to("cpu", torch.float32, copy=True) for p in parameters]

    def measure(self, parameters: list[torch.Tensor], before: list[torch.Tensor], dist: Dist) -> tuple[float, float]:
        """(size, cosine) of the update from `before` to the weights now. With sharded weights each process holds a
        share, and the sums are added over the processes (one collective); replicated weights are the same on
        every process."""
        delta = [local_shard(p).detach().to("cpu", torch.float32) - b for p, b in zip(parameters, before, strict=True)]
        moved = dot(delta, delta)
        sums = [moved, dot(before, before) + 2 * dot(before, delta) + moved]
        if self.previous is not None:
            sums += [dot(delta, self.previous), self.previous_moved]
        if any(isinstance(p, DTensor) for p in parameters):
            sums = dist.sum(sums).tolist()
        self.previous, self.previous_moved = delta, moved
        size = (sums[0] / sums[1]) ** 0.5 if sums[1] > 0 else float("nan")
        cosine = sums[2] / (sums[0] * sums[3]) ** 0.5 if len(sums) == 4 and sums[0] * sums[3] > 0 else float("nan")
        return size, cosine


def dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The dot product of two vectors held as lists of tensors, in float64."""
    return sum(float(torch.dot(x.flatten().double(), y.flatten().double())) for x, y in zip(a, b, strict=True))
