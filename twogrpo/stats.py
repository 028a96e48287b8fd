"""Uncertainty of the study's comparisons: intervals for the accuracy gap, the share of the gain and the trend of the
gap along an axis, all from the same variance components; and the time (and rollouts) each arm needs to reach a
target accuracy.

Every accuracy comparison is a linear contrast of models' Mean@k: the gap is arm - reference, the share of the gain
tests arm - base - s (reference - base). A model's Mean@k varies with the seeds it was trained with (a seed term), with
the problems the benchmark happened to hold (a problem term, shared by every model evaluated on them, so the
difference is paired by problem), and with the k samples drawn per problem. The terms are estimated by the method of
moments and the interval is Student's t with Welch-Satterthwaite degrees of freedom:

- seed term of a trained arm with n seeds: the variance of its per-seed Mean@k over n (it holds the sample noise and
  the seed-by-problem interaction too); n - 1 degrees of freedom, so 2-3 seeds give the wide interval they should.
  The base policy is one fixed model shared by every arm (the claims are about training from it): its only term is
  its samples' binomial noise.
- problem term: the covariance over problems of the models' per-problem accuracies (means over seeds and samples),
  less the within-cell noise that the seed terms already hold (two-way residual variance over seeds and problems),
  kept positive semi-definite, over the number of problems; each benchmark counts once in the average.

Why not the percentile bootstrap: resampling 2-3 seeds with replacement estimates (n-1)/n of the seed variance and
its percentiles follow the normal, not the t with n - 1 degrees of freedom, so its intervals cover far less than
95% with few seeds. tests/test_stats.py simulates studies with known variances and checks the coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special  # what scipy.stats.t.ppf and norm.ppf compute, without importing scipy.stats (slow to import)


@dataclass(frozen=True)
class Cells:
    """One model's evaluation: per seed and problem, the correct samples out of k; problems in a fixed order.
    `fixed`: one model shared by every arm (the base policy), whose only variation is its samples."""

    correct: np.ndarray  # [seeds, problems] correct samples
    k: int  # samples per problem
    benchmark: np.ndarray  # [problems] benchmark of each problem
    fixed: bool = False

    @staticmethod
    def from_records(per_seed: list[pd.DataFrame], problem_order: pd.Index, fixed: bool = False) -> Cells:
        """Cells from one EvalSamples table per seed, problems in `problem_order` (the same for every model)."""
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
        return Cells(np.stack(counts), ks.pop(), bench, fixed)

    @property
    def seeds(self) -> int:
        return self.correct.shape[0]

    def per_seed(self) -> np.ndarray:
        """[seeds] Mean@k of each seed, each benchmark counting once."""
        y = self.correct / self.k
        return np.mean([y[:, self.benchmark == b].mean(axis=1) for b in dict.fromkeys(self.benchmark)], axis=0)

    def mean(self) -> float:
        return float(self.per_seed().mean())

    def only(self, benchmark: str) -> Cells:
        """The cells of one benchmark."""
        keep = self.benchmark == benchmark
        return Cells(self.correct[:, keep], self.k, self.benchmark[keep], self.fixed)


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval at `level`, its standard error and degrees of freedom. Bounds are NaN
    where the interval cannot be formed (a trained arm with one seed has no seed term), -inf and +inf for a share whose
    denominator is not distinguished from 0."""

    value: float
    low: float
    high: float
    se: float
    df: float
    level: float


@dataclass(frozen=True)
class _Components:
    """The variance of the models' Mean@k: a seed term per model (with its degrees of freedom) and the problem
    term's covariance between models (with its degrees of freedom)."""

    seed: np.ndarray  # [models]
    seed_df: np.ndarray  # [models]
    problem: np.ndarray  # [models, models]
    problem_df: float

    def variance(self, w: np.ndarray) -> tuple[float, float]:
        """(variance, Welch-Satterthwaite degrees of freedom) of the contrast sum(w * Mean@k)."""
        parts = np.append(w ** 2 * self.seed, w @ self.problem @ w)
        dfs = np.append(self.seed_df, self.problem_df)
        total = float(parts.sum())
        if not np.isfinite(total):
            return np.nan, np.nan
        denominator = float(np.sum(parts[parts > 0] ** 2 / dfs[parts > 0]))
        return total, (total ** 2 / denominator if denominator > 0 else np.inf)


def _cell_noise(cells: Cells, columns: np.ndarray) -> float:
    """The variance of one (seed, problem) cell's accuracy around its seed and problem means: the two-way residual
    variance with 2+ seeds, else the binomial variance of a mean of k samples (0 when k = 1: not separable from the
    problem term, which then keeps it)."""
    y = cells.correct[:, columns] / cells.k
    n, p = y.shape
    if n >= 2 and p >= 2:
        residual = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
        return float((residual ** 2).sum() / ((n - 1) * (p - 1)))
    if cells.k < 2:
        return 0.0
    return float(np.mean(y * (1 - y) / (cells.k - 1)))


def _components(models: list[Cells]) -> _Components:
    bench = models[0].benchmark
    for m in models[1:]:
        if not np.array_equal(m.benchmark, bench):
            raise ValueError("the models were evaluated on different problems")
    names = list(dict.fromkeys(bench))
    b = len(names)
    seed, seed_df = np.zeros(len(models)), np.zeros(len(models))
    problem = np.zeros((len(models), len(models)))
    problem_df = np.inf
    for name in names:
        columns = np.flatnonzero(bench == name)
        p = len(columns)
        noise = np.array([_cell_noise(m, columns) for m in models])
        if p >= 2:
            means = np.stack([(m.correct[:, columns] / m.k).mean(axis=0) for m in models])  # [models, problems]
            cov = np.atleast_2d(np.cov(means)) - np.diag([r / m.seeds for r, m in zip(noise, models, strict=True)])
            values, vectors = np.linalg.eigh(cov)
            problem += (vectors * np.clip(values, 0, None)) @ vectors.T / (b ** 2 * p)
            problem_df = min(problem_df, p - 1)
        for i, m in enumerate(models):
            if m.fixed:  # its samples are its only variation
                seed[i] += noise[i] / (m.seeds * b ** 2 * p)
    for i, m in enumerate(models):
        if m.fixed:
            seed_df[i] = max(len(bench) - 1, 1)
        elif m.seeds >= 2:
            seed[i], seed_df[i] = m.per_seed().var(ddof=1) / m.seeds, m.seeds - 1
        else:
            seed[i], seed_df[i] = np.nan, np.nan  # one seed: its seed variance is unknown
    return _Components(seed, seed_df, problem, problem_df)


def _t(level: float, df: float) -> float:
    """The two-sided critical value; the normal's for infinite df, NaN for an unknown (NaN) df."""
    if np.isnan(df):
        return np.nan
    return float(special.stdtrit(df, 0.5 + level / 2)) if np.isfinite(df) else float(special.ndtri(0.5 + level / 2))


def contrast(models: list[Cells], weights: list[float], level: float = 0.95) -> Interval:
    """The interval of sum(weights * Mean@k) over `models` (evaluated on the same problems)."""
    w = np.asarray(weights, dtype=float)
    value = float(w @ np.array([m.mean() for m in models]))
    variance, df = _components(models).variance(w)
    if not np.isfinite(variance):
        return Interval(value, np.nan, np.nan, np.nan, np.nan, level)
    half = _t(level, df) * np.sqrt(variance)
    return Interval(value, value - half, value + half, float(np.sqrt(variance)), df, level)


def gap(arm: Cells, reference: Cells, level: float = 0.95) -> Interval:
    """Mean@k of `arm` minus `reference` (fractions), each benchmark counting once in the average."""
    return contrast([arm, reference], [1.0, -1.0], level)


def share(arm: Cells, reference: Cells, base: Cells, level: float = 0.95) -> Interval:
    """The arm's share of the reference's gain over the base, (arm - base) / (reference - base), with Fieller's
    interval: the shares s for which arm - base - s (reference - base) = 0 lies inside its own interval. The bounds
    are -inf and +inf when the reference's gain is not distinguished from 0 at `level` (the set is then unbounded: a
    share of nothing is no evidence); NaN when an arm has one seed. `se` is the delta-method standard error."""
    models = [arm, reference, base]
    a, r, b = (m.mean() for m in models)
    gain, own = r - b, a - b
    comp = _components(models)
    along, across = np.array([1.0, 0.0, -1.0]), np.array([0.0, -1.0, 1.0])  # w(s) = along + s * across
    sigma = np.diag(comp.seed) + comp.problem
    q0, q1, q2 = along @ sigma @ along, 2 * along @ sigma @ across, across @ sigma @ across
    value = own / gain if gain != 0 else np.nan
    variance, df = comp.variance(along + (value if np.isfinite(value) else 0.0) * across)
    if not np.isfinite(variance):
        return Interval(float(value), np.nan, np.nan, np.nan, np.nan, level)
    if not np.isfinite(value):  # no gain at all: no share can be bounded
        return Interval(float(value), -np.inf, np.inf, np.nan, df, level)
    t2 = _t(level, df) ** 2
    qa, qb, qc = gain ** 2 - t2 * q2, -(2 * own * gain + t2 * q1), own ** 2 - t2 * q0
    se = float(np.sqrt(variance) / abs(gain))
    if qa <= 0:  # the set is the whole line or two rays around a gap: reported as the whole line
        return Interval(float(value), -np.inf, np.inf, se, df, level)
    root = np.sqrt(max(qb ** 2 - 4 * qa * qc, 0.0))
    return Interval(float(value), float((-qb - root) / (2 * qa)), float((-qb + root) / (2 * qa)), se, df, level)


@dataclass(frozen=True)
class Trend:
    """A weighted line through estimates along an axis: its slope with the slope's interval, and the fitted value at
    the axis' two ends with theirs."""

    slope: Interval
    start: Interval  # fitted at the smallest axis value
    end: Interval  # fitted at the largest
    points: int


def trend(x: np.ndarray, estimates: list[Interval], level: float = 0.95) -> Trend:
    """Weighted least squares of the estimates on x (weights 1 / se^2). Each estimate's variance carries its own seed,
    problem and sample terms (`contrast`); with more than two points the variances are scaled up by the residual
    scatter about the line when it exceeds them (Birge ratio), so a curved path widens the slope's interval. Degrees
    of freedom by Welch-Satterthwaite over the points. Needs 2+ points with finite standard errors."""
    x = np.asarray(x, dtype=float)
    g = np.array([e.value for e in estimates])
    se = np.array([e.se for e in estimates])
    dfs = np.array([e.df for e in estimates])
    if len(x) < 2 or np.ptp(x) == 0 or not (np.all(np.isfinite(g)) and np.all(np.isfinite(se))
                                             and not np.any(np.isnan(dfs))):
        raise ValueError("a trend needs 2+ points at different axis values, each with a finite estimate, standard "
                         "error and degrees of freedom")
    se = np.maximum(se, 1e-12)
    w = 1 / se ** 2
    xbar = np.sum(w * x) / w.sum()
    sxx = np.sum(w * (x - xbar) ** 2)
    slope = np.sum(w * (x - xbar) * (g - np.sum(w * g) / w.sum())) / sxx
    intercept = np.sum(w * g) / w.sum() - slope * xbar
    scale = 1.0
    if len(x) > 2:
        scale = max(1.0, float(np.sum(w * (g - intercept - slope * x) ** 2) / (len(x) - 2)))

    def linear(c: np.ndarray, value: float) -> Interval:
        parts = c ** 2 * se ** 2 * scale
        variance = float(parts.sum())
        denominator = float(np.sum(parts[parts > 0] ** 2 / dfs[parts > 0]))
        df = variance ** 2 / denominator if denominator > 0 else np.inf
        if len(x) > 2 and scale > 1:
            df = min(df, len(x) - 2)
        half = _t(level, df) * np.sqrt(variance)
        return Interval(float(value), float(value - half), float(value + half), float(np.sqrt(variance)), df, level)

    def at(x0: float) -> np.ndarray:
        return w / w.sum() + w * (x - xbar) * (x0 - xbar) / sxx

    return Trend(linear(w * (x - xbar) / sxx, slope), linear(at(x.min()), intercept + slope * x.min()),
                 linear(at(x.max()), intercept + slope * x.max()), len(x))


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
    """(mean, low, high): the Student-t interval of the mean over runs, its low end no lower than `floor` (0 for
    seconds and rollouts, which cannot be negative; with 2 seeds t is 12.7 and the plain interval often crosses 0).
    NaN bounds with fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = _t(level, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
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
