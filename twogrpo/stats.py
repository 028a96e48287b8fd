"""Uncertainty of the study's comparisons: a hierarchical bootstrap over seeds, problems and samples, and the time
(and rollouts) each arm needs to reach a target accuracy.

The bootstrap resamples, in each replicate: the seeds of each arm (independently per arm; runs are not paired),
the problems of each benchmark (one draw shared by both arms, so the difference is paired by problem), and the k
samples of every (seed, problem) cell. Resampling k binary samples with replacement is drawing Binomial(k, c/k)
for a cell with c correct, which is what is done. The interval is the percentile interval of the replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Cells:
    """One arm's evaluation: per seed and problem, the correct samples out of k; problems in a fixed order."""

    correct: np.ndarray  # [seeds, problems] correct samples
    k: int  # samples per problem
    benchmark: np.ndarray  # [problems] benchmark of each problem

    @staticmethod
    def from_records(per_seed: list[pd.DataFrame], problem_order: pd.Index) -> Cells:
        """Cells from one EvalSamples table per seed, problems in `problem_order` (the same for every arm)."""
        counts, ks, bench = [], set(), None
        for records in per_seed:
            grouped = records.groupby("problem_id").agg(c=("correct", "sum"), k=("correct", "size"),
                                                        benchmark=("benchmark", "first")).reindex(problem_order)
            if grouped["c"].isna().any():
                missing = grouped.index[grouped["c"].isna()][:3].tolist()
                raise ValueError(f"evaluation records lack problems {missing}; every run must see the same problems")
            counts.append(grouped["c"].to_numpy(dtype=int))
            ks.update(grouped["k"].astype(int).unique().tolist())
            bench = grouped["benchmark"].to_numpy()
        if len(ks) != 1:
            raise ValueError(f"runs have different samples per problem: {sorted(ks)}")
        return Cells(np.stack(counts), ks.pop(), bench)


def _replicate(cells: Cells, problems: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One bootstrap replicate of the accuracy per problem slot: [len(problems)] means over seeds and samples."""
    seeds = rng.integers(0, cells.correct.shape[0], size=cells.correct.shape[0])
    drawn = rng.binomial(cells.k, cells.correct[np.ix_(seeds, problems)] / cells.k)  # [seeds, problems]
    return drawn.mean(axis=0) / cells.k


def bootstrap_gap(arm: Cells, reference: Cells, n_boot: int, seed: int, level: float = 0.95) -> dict[str, dict]:
    """The Mean@k difference arm - reference per benchmark and averaged over benchmarks (each counts once), as
    {name: {"gap", "low", "high"}} (fractions); "gap" is the observed difference, low/high the percentile interval.
    Also each arm's own Mean@k interval ("arm_low", "arm_high")."""
    if not np.array_equal(arm.benchmark, reference.benchmark):
        raise ValueError("the two arms were evaluated on different problems")
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(arm.benchmark))
    slots = {b: np.flatnonzero(arm.benchmark == b) for b in names}
    gaps = np.empty((n_boot, len(names)))
    own = np.empty((n_boot, len(names)))
    for i in range(n_boot):
        problems = np.concatenate([rng.choice(slots[b], size=len(slots[b])) for b in names])
        a, r = _replicate(arm, problems, rng), _replicate(reference, problems, rng)
        start = 0
        for j, b in enumerate(names):
            part = slice(start, start + len(slots[b]))
            gaps[i, j], own[i, j] = a[part].mean() - r[part].mean(), a[part].mean()
            start += len(slots[b])
    observed = {b: arm.correct[:, slots[b]].mean() / arm.k - reference.correct[:, slots[b]].mean() / reference.k
                for b in names}
    own_observed = {b: arm.correct[:, slots[b]].mean() / arm.k for b in names}
    tail = 100 * (1 - level) / 2
    out = {}
    for j, b in enumerate([*names, "average"]):
        g = gaps[:, j] if b != "average" else gaps.mean(axis=1)
        m = own[:, j] if b != "average" else own.mean(axis=1)
        point = observed[b] if b != "average" else float(np.mean(list(observed.values())))
        own_point = own_observed[b] if b != "average" else float(np.mean(list(own_observed.values())))
        low, high = np.percentile(g, [tail, 100 - tail])
        arm_low, arm_high = np.percentile(m, [tail, 100 - tail])
        out[b] = {"gap": float(point), "low": float(low), "high": float(high), "arm_mean": float(own_point),
                  "arm_low": float(arm_low), "arm_high": float(arm_high)}
    return out


def time_to_target(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run (arm, seed): the training seconds and rollouts at the first generation step whose in-training eval
    accuracy reaches `target`; NaN when the run never does."""
    rows = []
    for (arm, seed), run in curves.groupby(["arm", "seed"], sort=False):
        run = run.sort_values("gen_step")
        hit = run[run["eval_accuracy"] >= target]
        first = hit.iloc[0] if len(hit) else None
        rows.append({"arm": arm, "seed": seed, "target": target,
                     "seconds": float(first["train_time"]) if first is not None else np.nan,
                     "rollouts": float(first["rollouts"]) if first is not None else np.nan,
                     "gen_step": float(first["gen_step"]) if first is not None else np.nan})
    return pd.DataFrame(rows)


def seed_interval(values: np.ndarray, level: float = 0.95, floor: float = -np.inf) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean over runs (seeds are few, so not a bootstrap, whose
    percentile interval over 2 or 3 values is far too narrow), its low end no lower than `floor` (0 for seconds and
    rollouts, which cannot be negative; with 2 seeds t is 12.7 and the plain interval often crosses 0). NaN bounds
    with fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, float(max(mean - half, floor)), float(mean + half)


def time_to_target_by_arm(reached: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per arm, from time_to_target's rows: runs, runs that reached the target, and the mean seconds and rollouts
    over those runs with their t-interval over seeds (floored at 0). A run that never reached is counted, not
    averaged in."""
    rows = []
    for arm, runs in reached.groupby("arm", sort=False):
        hit = runs.dropna(subset=["seconds"])
        row = {"arm": arm, "runs": len(runs), "reached": len(hit)}
        for column in ("seconds", "rollouts"):
            row[column], row[f"{column}_low"], row[f"{column}_high"] = seed_interval(hit[column].to_numpy(), level,
                                                                                     floor=0.0)
        rows.append(row)
    return pd.DataFrame(rows)
