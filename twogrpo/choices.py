"""The names params.yaml chooses among and the code dispatches on, each defined once: the graders, the advantage and
loss variants, the optimizers, the real datasets, and the phases of a generation step. Every other module imports
them from here (twogrpo.config checks params against them; twogrpo.grpo, twogrpo.grading, twogrpo.optim and
twogrpo.telemetry act on them)."""

from __future__ import annotations

import typing
from typing import Literal

# Verifiers of a completion against the gold answer (twogrpo.grading).
Grader = Literal["math-verify", "verl-math", "verl-dapo"]
GRADERS: tuple[Grader, ...] = typing.get_args(Grader)
# The group advantage's denominator (twogrpo.grpo.group_advantages) and the loss aggregation (twogrpo.grpo.aggregate).
AdvStd = Literal["bessel", "population", "none"]
LossAgg = Literal["token-mean", "micro-token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
# An arm's optimizer (twogrpo.optim.optimizer_with_warmup).
Optimizer = Literal["adamw", "sgd"]

# The real datasets twogrpo.mathdata loads: the paper's train sets, then the benchmarks (the paper's five, and GSM8K
# and AIME24 for the setups that add them). The embedded task's `chain_sum` is generated, not loaded.
TRAIN_SETS = ("math", "dapo_math_sub")
BENCHMARKS = ("math500", "amc23", "aime25", "minerva_math", "olympiadbench", "gsm8k", "aime24")
REAL_DATASETS = TRAIN_SETS + BENCHMARKS

# The timed phases of a generation step, in order (twogrpo.telemetry; the ledger's time_<phase> and cpu_<phase>).
PHASES = ("generation", "reward", "old_logprob", "update", "sync")
