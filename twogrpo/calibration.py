"""Simulated studies with known truth, to check that twogrpo.stats' intervals cover at their level.

A study: one benchmark of `problems` problems, each with a difficulty drawn on the logit scale; a fixed base policy
and two trained arms (a reference and a challenger), each trained with `seeds` seeds; `k` samples per problem. A
model's logit on a problem is the difficulty + the model's shift + a model-by-problem effect; a trained run adds a
seed shift (over all problems) and a seed-by-problem effect. Samples are Bernoulli draws. The true gap and share
are population values (over problems and seeds), computed exactly, so the interval is judged against what a study
repeated forever would find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import integrate, special

from twogrpo.stats import Cells, gap, share, trend


@dataclass(frozen=True)
class Scenario:
    """Parameters on the logit scale. The defaults are near what the embedded study measured: a base near 39% Mean@8
    with strongly bimodal problems (the study's: 44%), a reference gaining about 5.5 points (+5.3); seed_sd 0.03-0.2
    gives per-seed Mean@k spreads of 0.5-2.5 points (the study and the ladder: 0.1-2.1)."""

    problems: int = 500
    k: int = 8
    seeds: int = 3
    difficulty_mean: float = -0.9
    difficulty_sd: float = 2.5
    reference_shift: float = 0.45
    arm_shift: float = 0.40
    problem_effect_sd: float = 0.3  # each model's own per-problem deviation
    seed_sd: float = 0.1  # a run's shift over all problems
    seed_problem_sd: float = 0.3  # a run's per-problem deviation

    def _population_mean(self, shift: float, extra_sd: float) -> float:
        sd = np.sqrt(self.difficulty_sd ** 2 + extra_sd ** 2)
        mean = self.difficulty_mean + shift

        def density(z):
            return special.expit(mean + sd * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
        return float(integrate.quad(density, -12, 12, epsabs=1e-12)[0])

    def truth(self) -> tuple[float, float]:
        """(true gap arm - reference, true share (arm - base) / (reference - base)), over problems and seeds."""
        trained = np.sqrt(self.problem_effect_sd ** 2 + self.seed_sd ** 2 + self.seed_problem_sd ** 2)
        base = self._population_mean(0.0, self.problem_effect_sd)
        reference = self._population_mean(self.reference_shift, trained)
        arm = self._population_mean(self.arm_shift, trained)
        return arm - reference, (arm - base) / (reference - base)

    def study(self, rng: np.random.Generator) -> dict[str, Cells]:
        """One simulated study: base, reference and arm Cells."""
        shifts = {"base": 0.0, "reference": self.reference_shift, "arm": self.arm_shift}
        difficulty = rng.normal(self.difficulty_mean, self.difficulty_sd, self.problems)
        bench = np.array(["sim"] * self.problems)
        out = {}
        for name, s in shifts.items():
            runs = 1 if name == "base" else self.seeds
            logit = difficulty + s + rng.normal(0, self.problem_effect_sd, self.problems)
            if name != "base":
                logit = (logit + rng.normal(0, self.seed_sd, (runs, 1))
                         + rng.normal(0, self.seed_problem_sd, (runs, self.problems)))
            logit = np.broadcast_to(logit, (runs, self.problems))
            out[name] = Cells(rng.binomial(self.k, special.expit(logit)), self.k, bench, fixed=name == "base")
        return out


def coverage(scenario: Scenario, studies: int, seed: int = 0) -> dict[str, float]:
    """Over `studies` simulated studies: the fraction whose 95% gap and share intervals cover the true values ("gap",
    "share"; an unbounded share covers, and makes no claim), the share's coverage among bounded intervals only
    ("share_bounded") and the fraction bounded ("bounded"), and how often the one-sided 95% lower bound of the share
    (the verdict's) lies above the true share ("bound_above"; at most 5% expected)."""
    true_gap, true_share = scenario.truth()
    rng = np.random.default_rng(seed)
    hits = {"gap": 0, "share": 0, "share_bounded": 0, "bounded": 0, "bound_above": 0}
    for _ in range(studies):
        c = scenario.study(rng)
        g = gap(c["arm"], c["reference"])
        s = share(c["arm"], c["reference"], c["base"])
        bounded = bool(np.isfinite(s.low) and np.isfinite(s.high))
        hits["gap"] += g.low <= true_gap <= g.high
        hits["share"] += bool(s.low <= true_share <= s.high)
        hits["bounded"] += bounded
        hits["share_bounded"] += bounded and bool(s.low <= true_share <= s.high)
        hits["bound_above"] += bool(share(c["arm"], c["reference"], c["base"], level=0.90).low > true_share)
    out = {name: value / studies for name, value in hits.items()}
    out["share_bounded"] = hits["share_bounded"] / max(hits["bounded"], 1)
    return out


def false_trend_rate(scenario: Scenario, points: int, studies: int, seed: int = 0) -> float:
    """The fraction of simulated ladders (`points` points along an axis with the same true gap everywhere, each point
    its own study) whose slope interval excludes 0: the rate of trends claimed where there is none."""
    rng = np.random.default_rng(seed)
    claimed = 0
    for _ in range(studies):
        gaps = []
        for _ in range(points):
            c = scenario.study(rng)
            gaps.append(gap(c["arm"], c["reference"]))
        slope = trend(np.arange(points), gaps).slope
        claimed += not (slope.low <= 0 <= slope.high)
    return claimed / studies
