"""Per-sample evaluation records: k graded samples per problem (metrics from them: twogrpo.metrics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twogrpo.engine import HFEngine, Sampling
from twogrpo.grading import grade
from twogrpo.policy import render_prompts


def sample_records(engine: HFEngine, problems: pd.DataFrame, template: str, sampling: Sampling,
                   seed: int) -> pd.DataFrame:
    """k samples per problem, graded; one row per sample (the EvalSamples schema).

    Sampling is seeded here and the caller's RNG state is restored, so evaluating inside training changes nothing.
    """
    prompts = render_prompts(engine.tokenizer, problems["problem"].tolist(), template)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        samples = engine.generate(prompts, sampling)
    golds = np.repeat(problems["answer"].to_numpy(), sampling.n)
    graded = [grade(gold, text) for gold, text in zip(golds, samples.texts, strict=True)]
    return pd.DataFrame({
        "benchmark": np.repeat(problems["dataset"].to_numpy(), sampling.n),
        "problem_id": np.repeat(problems["id"].to_numpy(), sampling.n),
        "sample": np.tile(np.arange(sampling.n), len(problems)),
        "completion": samples.texts,
        "extracted": [extracted for _, extracted in graded],
        "correct": [correct for correct, _ in graded],
        "tokens": [len(r) for r in samples.response_ids],
        "truncated": samples.truncated,
    })


def first_problems(problems: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first n problems of each benchmark (all when n is 0), benchmarks in table order."""
    return problems if n == 0 else problems.groupby("dataset", sort=False).head(n).reset_index(drop=True)
