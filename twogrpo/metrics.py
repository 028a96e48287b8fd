"""The metrics of an evaluation, computed from its per-sample records (EvalSamples): Mean@k, unbiased Pass@k for
every k, majority vote @k; per benchmark and averaged over benchmarks. Pure pandas, so reports can regrade and
recompute without generating."""

from __future__ import annotations

from collections import Counter
from math import comb

import numpy as np
import pandas as pd


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(extracted: list[str], correct: list[bool]) -> bool:
    """Majority vote over one problem's samples: is the most frequent extracted answer right? Samples with no answer
    do not vote; ties go to the answer seen first; answers are compared as the grader read them (as text; a right
    answer as the gold's text, twogrpo.grading.Grade)."""
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
           "truncated_frac": float(records["truncated"].mean()), "timeout_frac": float(records["timed_out"].mean()),
           "mean_tokens": float(records["tokens"].mean())}
    j = 1
    while j <= k:
        out[f"pass_at_{j}"] = float(np.mean([pass_at_k(k, int(c), j) for c in per_problem["sum"]]))
        j *= 2
    out["pass_at_k"] = float(np.mean([pass_at_k(k, int(c), k) for c in per_problem["sum"]]))
    return out


def pass_at_j_curve(records: pd.DataFrame) -> pd.DataFrame:
    """Pass@j for every j = 1..k per benchmark, averaged over its problems: columns benchmark, j, pass_at_j."""
    rows = []
    for bench, part in records.groupby("benchmark", sort=False):
        per_problem = part.groupby("problem_id")["correct"].agg(["size", "sum"])
        k = int(per_problem["size"].min())
        if (per_problem["size"] != k).any():
            counts = sorted(per_problem["size"].unique())
            raise ValueError(f"{bench}: problems have different numbers of samples: {counts}")
        rows += [{"benchmark": bench, "j": j,
                  "pass_at_j": float(np.mean([pass_at_k(k, int(c), j) for c in per_problem["sum"]]))}
                 for j in range(1, k + 1)]
    return pd.DataFrame(rows)


def benchmark_metrics(records: pd.DataFrame) -> dict:
    """Metrics per benchmark, and their unweighted average over benchmarks at the top level (the paper's "Avg"
    column: each benchmark counts once, whatever its size). One benchmark: the top level is that benchmark's."""
    per = {name: metrics(part) for name, part in records.groupby("benchmark", sort=False)}
    keys = [k for k in next(iter(per.values())) if k not in ("k", "problems")]
    average = {k: float(np.mean([m[k] for m in per.values()])) for k in keys}
    return {"k": next(iter(per.values()))["k"], "problems": sum(m["problems"] for m in per.values()), **average,
            "benchmarks": per}
