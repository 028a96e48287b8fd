"""One strict pandera schema per on-disk table. Writers validate before writing; readers validate after reading."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors
from pandera.typing import Series


class DataError(ValueError):
    """A table on disk does not match its schema; the message names the file, row and field."""


class Problems(pa.DataFrameModel):
    """A train, validation or benchmark problem table (data/prepared/{train,validation,test}.parquet), one schema
    for the embedded chain sums and for the paper's data."""

    id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})  # "<dataset>/<id in the source>"
    dataset: Series[str] = pa.Field(str_length={"min_value": 1})  # chain_sum, math, math500, amc23, ...
    problem: Series[str] = pa.Field(str_length={"min_value": 1}, str_matches=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")
    answer: Series[str] = pa.Field(str_length={"min_value": 1})  # the gold answer, as math-verify reads it when boxed
    solution: Series[str] = pa.Field(nullable=False)  # a worked solution ending in \boxed{answer}, or "" (SFT only)
    level: Series[str]  # metadata, "" when the source has none
    subject: Series[str]

    class Config:
        strict = True
        coerce = False


class Generations(pa.DataFrameModel):
    """Per-sample generations of an evaluation (eval/<model>/generations.parquet), before grading."""

    benchmark: Series[str]
    problem_id: Series[str]
    sample: Series[int] = pa.Field(ge=0)
    completion: Series[str]
    tokens: Series[int] = pa.Field(ge=0)  # response tokens, EOS included
    truncated: Series[bool]  # stopped by max_new_tokens before EOS

    class Config:
        strict = True
        unique = ["problem_id", "sample"]


class EvalSamples(Generations):
    """Per-sample evaluation records, graded (eval/<model>/samples.parquet): every metric is recomputed from these.
    `correct`, `extracted` and `timed_out` are the evaluation grader's (grading.evaluation); correct_<grader> holds
    each grader's verdict (twogrpo.grading)."""

    # The answer the grader read ("" when none; the gold's text when correct, so equal answers vote together).
    extracted: Series[str]
    correct: Series[bool]
    timed_out: Series[bool]  # grading ran out of time (twogrpo.grading.TIMEOUT_S): graded wrong
    correct_math_verify: Series[bool]
    correct_verl_math: Series[bool]
    correct_verl_dapo: Series[bool]


class ValidationSamples(pa.DataFrameModel):
    """The final policy of a run graded on every validation problem of train.eval_benchmark
    (runs/<arm>-s<seed>/validation.parquet): what the package's choices read, never the test set."""

    benchmark: Series[str]
    problem_id: Series[str]
    sample: Series[int] = pa.Field(ge=0)
    correct: Series[bool]  # by the reward's grader (grading.reward)

    class Config:
        strict = True
        unique = ["problem_id", "sample"]


class TrainSteps(pa.DataFrameModel):
    """The training ledger (runs/<arm>-s<seed>/steps.parquet): one row per generation step, row 0 before training.

    Counters are totals so far; the step statistics describe this step (NaN in row 0, kl NaN when the KL is off).
    """

    gen_step: Series[int] = pa.Field(ge=0, unique=True)
    epoch: Series[int] = pa.Field(ge=0)
    prompts_seen: Series[int] = pa.Field(ge=0)  # prompts drawn so far (2-GRPO+RS draws more than it trains on)
    opt_steps: Series[int] = pa.Field(ge=0)  # optimizer updates so far
    rollouts: Series[int] = pa.Field(ge=0)  # rollouts generated so far, discarded ones included
    tokens: Series[int] = pa.Field(ge=0)  # response tokens generated so far
    rs_budget_used: Series[float] = pa.Field(ge=0)  # rollouts / 16-GRPO's budget for the same steps
    lr: Series[float] = pa.Field(ge=0)
    mean_reward: Series[float] = pa.Field(nullable=True)  # this step's trained rollouts
    dead_group_frac: Series[float] = pa.Field(nullable=True, ge=0, le=1)  # groups with all-equal rewards
    informative_prompts_per_update: Series[float] = pa.Field(nullable=True, ge=0)  # groups with a gradient
    informative_tokens_per_update: Series[float] = pa.Field(nullable=True, ge=0)  # their response tokens
    adv_abs_mean: Series[float] = pa.Field(nullable=True, ge=0)
    clip_frac_high: Series[float] = pa.Field(nullable=True, ge=0, le=1)  # A > 0, ratio > 1 + clip_high
    clip_frac_low: Series[float] = pa.Field(nullable=True, ge=0, le=1)  # A < 0, ratio < 1 - clip_low
    clip_frac_dual: Series[float] = pa.Field(nullable=True, ge=0, le=1)  # A < 0, ratio > clip_ratio_c
    entropy: Series[float] = pa.Field(nullable=True, ge=0)  # mean token entropy of the policy at update time
    grad_norm: Series[float] = pa.Field(nullable=True, ge=0)  # before clipping, mean over updates
    kl: Series[float] = pa.Field(nullable=True)  # mean token low_var_kl to the reference, when on
    update_size: Series[float] = pa.Field(nullable=True, ge=0)  # ||delta theta|| / ||theta||, mean over updates
    update_cosine: Series[float] = pa.Field(nullable=True, ge=-1.0001, le=1.0001)  # with the update before, mean
    mean_response_tokens: Series[float] = pa.Field(nullable=True)
    time_generation: Series[float] = pa.Field(ge=0)  # seconds so far, per phase
    time_reward: Series[float] = pa.Field(ge=0)
    time_old_logprob: Series[float] = pa.Field(ge=0)
    time_update: Series[float] = pa.Field(ge=0)
    time_sync: Series[float] = pa.Field(ge=0)  # pushing new weights to the generation engine (vLLM)
    train_time: Series[float] = pa.Field(ge=0)  # the five phases together (evaluation excluded)
    cpu_generation: Series[float] = pa.Field(ge=0)  # CPU seconds so far, per phase (this process and its children)
    cpu_reward: Series[float] = pa.Field(ge=0)
    cpu_old_logprob: Series[float] = pa.Field(ge=0)
    cpu_update: Series[float] = pa.Field(ge=0)
    cpu_sync: Series[float] = pa.Field(ge=0)
    train_cpu_time: Series[float] = pa.Field(ge=0)
    train_cpu_wait: Series[float] = pa.Field(nullable=True, ge=0)  # seconds its threads waited for a CPU (Linux)
    load_average: Series[float] = pa.Field(ge=0)  # the machine's 1-minute load average after the step
    engine_logprob_gap: Series[float] = pa.Field(nullable=True, ge=0)  # mean |engine - trainer| token log-prob (vLLM)
    eval_accuracy: Series[float] = pa.Field(nullable=True, ge=0, le=1)  # mean accuracy on the eval subset
    # mean per-token KL(policy || base) on the eval subset's responses (train.eval_kl); >= 0 up to float rounding
    eval_kl: Series[float] = pa.Field(nullable=True, ge=-1e-6)
    time_eval: Series[float] = pa.Field(ge=0)

    class Config:
        strict = True


class Summary(pa.DataFrameModel):
    """One row per evaluated model (results/summary.csv)."""

    model: Series[str] = pa.Field(unique=True)
    arm: Series[str]  # "base" for the base policy
    seed: Series[int] = pa.Field(nullable=True)
    group_size: Series[int] = pa.Field(nullable=True)
    lr: Series[float] = pa.Field(nullable=True)
    mean_at_k: Series[float] = pa.Field(ge=0, le=1)
    pass_at_k: Series[float] = pa.Field(ge=0, le=1)
    k: Series[int] = pa.Field(ge=1)
    # Mean@k under each grader (twogrpo.grading; mean_at_k is grading.evaluation's), from the same samples.
    mean_at_k_math_verify: Series[float] = pa.Field(ge=0, le=1)
    mean_at_k_verl_math: Series[float] = pa.Field(ge=0, le=1)
    mean_at_k_verl_dapo: Series[float] = pa.Field(ge=0, le=1)
    prompts_seen: Series[int] = pa.Field(ge=0)
    rollouts: Series[int] = pa.Field(ge=0)
    tokens: Series[int] = pa.Field(ge=0)
    opt_steps: Series[int] = pa.Field(ge=0)
    time_generation: Series[float] = pa.Field(ge=0)
    time_reward: Series[float] = pa.Field(ge=0)
    time_old_logprob: Series[float] = pa.Field(ge=0)
    time_update: Series[float] = pa.Field(ge=0)
    time_sync: Series[float] = pa.Field(ge=0)
    train_time: Series[float] = pa.Field(ge=0)
    train_cpu_time: Series[float] = pa.Field(ge=0)  # CPU seconds of the five phases
    cpu_wait_share: Series[float] = pa.Field(nullable=True, ge=0)  # seconds waited for a CPU / train_time
    load_max: Series[float] = pa.Field(nullable=True, ge=0)  # the highest 1-minute load average after a step
    dead_group_frac: Series[float] = pa.Field(nullable=True, ge=0, le=1)

    class Config:
        strict = True
        coerce = True


class BenchmarkResults(pa.DataFrameModel):
    """One row per evaluated model and benchmark (results/benchmarks.csv)."""

    model: Series[str]
    arm: Series[str]  # "base" for the base policy
    seed: Series[int] = pa.Field(nullable=True)
    benchmark: Series[str]
    problems: Series[int] = pa.Field(ge=1)
    k: Series[int] = pa.Field(ge=1)
    mean_at_k: Series[float] = pa.Field(ge=0, le=1)
    pass_at_k: Series[float] = pa.Field(ge=0, le=1)

    class Config:
        strict = True
        coerce = True
        unique = ["model", "benchmark"]


def validate(df: pd.DataFrame, schema: type[pa.DataFrameModel], where: Path | str) -> pd.DataFrame:
    """Validate a table, raising DataError that names the file, the rows and fields that failed."""
    try:
        return schema.validate(df, lazy=True)
    except (SchemaErrors, SchemaError) as err:
        cases = getattr(err, "failure_cases", None)
        if cases is not None and len(cases):
            lines = [f"row {row['index']}, field {row['column']}: {row['check']} (got {row['failure_case']!r})"
                     for _, row in cases.head(10).iterrows()]
            more = f"\n  ... and {len(cases) - 10} more" if len(cases) > 10 else ""
            raise DataError(f"{where}: does not match {schema.__name__}:\n  " + "\n  ".join(lines) + more) from None
        raise DataError(f"{where}: does not match {schema.__name__}: {err}") from None


def read_table(path: Path | str, schema: type[pa.DataFrameModel]) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing (run the stage that writes it: dvc repro)")
    df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    if df.empty:
        raise DataError(f"{path}: empty table")
    return validate(df, schema, path)
