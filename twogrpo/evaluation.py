"""Per-sample evaluation records: k graded samples per problem (metrics from them: twogrpo.metrics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twogrpo.checkpoint import Checkpoint, rng_states, set_rng_states
from twogrpo.engine import HFEngine, Sampling
from twogrpo.grading import grade
from twogrpo.policy import render_prompts


def sample_records(engine: HFEngine, problems: pd.DataFrame, template: str, sampling: Sampling,
                   seed: int, progress: Checkpoint | None = None) -> pd.DataFrame:
    """k samples per problem, graded; one row per sample (the EvalSamples schema).

    Sampling is seeded here and the caller's RNG state is restored, so evaluating inside training changes nothing.
    Problems go to the engine in chunks of whole engine batches (batch_sequences / k problems), which gives the
    samples of one call when k divides the batch. With `progress`, the records so far and the RNG state are saved
    after each chunk, and a saved state is resumed: the chunks done are not generated again, and with the HF engine
    the result equals an uninterrupted run's (vLLM keeps its sampler state inside, so its resumed part differs).
    """
    per_chunk = max(1, getattr(engine, "batch_sequences", 1024) // sampling.n)
    state = progress.load() if progress else None
    with torch.random.fork_rng():
        if state:
            set_rng_states(state["rng"])
            parts, first = [state["records"]], state["step"]
        else:
            torch.manual_seed(seed)
            parts, first = [], 0
        for start in range(first, len(problems), per_chunk):
            parts.append(_graded(engine, problems.iloc[start:start + per_chunk], template, sampling))
            done = min(start + per_chunk, len(problems))
            if progress and done < len(problems):
                progress.save({"records": pd.concat(parts, ignore_index=True), "rng": rng_states()}, done)
    return pd.concat(parts, ignore_index=True)


def _graded(engine, problems: pd.DataFrame, template: str, sampling: Sampling) -> pd.DataFrame:
    prompts = render_prompts(engine.tokenizer, problems["problem"].tolist(), template)
    samples = engine.generate(prompts, sampling)
    golds = np.repeat(problems["answer"].to_numpy(), sampling.n)
    graded = [grade(gold, text) for gold, text in zip(golds, samples.texts, strict=True)]
    return pd.DataFrame({
        "benchmark": np.repeat(problems["dataset"].to_numpy(), sampling.n),
        "problem_id": np.repeat(problems["id"].to_numpy(), sampling.n),
        "sample": np.tile(np.arange(sampling.n), len(problems)),
        "completion": samples.texts,
        "extracted": [extracted for _, extracted, _ in graded],
        "correct": [correct for correct, _, _ in graded],
        "tokens": [len(r) for r in samples.response_ids],
        "truncated": samples.truncated,
        "timed_out": [timed_out for _, _, timed_out in graded],
    })


def first_problems(problems: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first n problems of each benchmark (all when n is 0), benchmarks in table order."""
    return problems if n == 0 else problems.groupby("dataset", sort=False).head(n).reset_index(drop=True)
