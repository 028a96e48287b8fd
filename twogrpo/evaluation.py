"""Per-sample evaluation records and the metrics computed from them (Mean@k, unbiased Pass@k)."""

from __future__ import annotations

from collections import Counter
from math import comb

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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(extracted: list[str], correct: list[bool]) -> bool:
    """Majority vote over one problem's samples: is the most frequent extracted answer right? Samples with no answer
    do not vote; ties go to the answer seen first; answers are compared as math-verify extracted them (as text)."""
    votes = Counter(e for e in extracted if e)
    if not votes:
        return False
    winner = votes.most_common(1)[0][0]
    return correct[extracted.index(winner)]


def metrics(records: pd.DataFrame) -> dict[str, float]:
    """Mean@k (mean accuracy over all samples), majority vote @k and Pass@j for j = 1, 2, 4, ..., k, averaged over
    problems."""
    per_problem = records.groupby("problem_id")["correct"].agg(["size", "sum"])
    sizes = per_problem["size"].unique()
    if len(sizes) != 1:
        raise ValueError(f"problems have different numbers of samples: {sorted(sizes)}")
    k = int(sizes[0])
    votes = [majority_correct(g["extracted"].tolist(), g["correct"].tolist()) for _, g in records.groupby("problem_id")]
    out = {"k": k, "problems": len(per_problem), "mean_at_k": float(records["correct"].mean()),
           "maj_at_k": float(np.mean(votes)),
           "truncated_frac": float(records["truncated"].mean()), "mean_tokens": float(records["tokens"].mean())}
    j = 1
    while j <= k:
        out[f"pass_at_{j}"] = float(np.mean([pass_at_k(k, int(c), j) for c in per_problem["sum"]]))
        j *= 2
    out["pass_at_k"] = float(np.mean([pass_at_k(k, int(c), k) for c in per_problem["sum"]]))
    return out


def benchmark_metrics(records: pd.DataFrame) -> dict:
    """Metrics per benchmark, and their unweighted average over benchmarks at the top level (the paper's "Avg"
    column: each benchmark counts once, whatever its size). One benchmark: the top level is that benchmark's."""
    per = {name: metrics(part) for name, part in records.groupby("benchmark", sort=False)}
    keys = [k for k in next(iter(per.values())) if k not in ("k", "problems")]
    average = {k: float(np.mean([m[k] for m in per.values()])) for k in keys}
    return {"k": next(iter(per.values()))["k"], "problems": sum(m["problems"] for m in per.values()), **average,
            "benchmarks": per}


def first_problems(problems: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first n problems of each benchmark (all when n is 0), benchmarks in table order."""
    return problems if n == 0 else problems.groupby("dataset", sort=False).head(n).reset_index(drop=True)
