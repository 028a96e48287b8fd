"""The intervals against closed forms and simulated studies with known truth; time-to-target on hand-made cases."""

import numpy as np
import pandas as pd
import pytest

from twogrpo.calibration import Scenario, coverage, false_trend_rate
from twogrpo.stats import (
    Cells,
    Interval,
    contrast,
    gap,
    seed_interval,
    share,
    time_to_target,
    time_to_target_by_arm,
    trend,
)


def cells(correct, k, benchmarks=None):
    correct = np.asarray(correct)
    return Cells(correct, k, np.asarray(benchmarks or ["b"] * correct.shape[1]))


def test_the_seed_term_is_the_t_interval_over_seeds():
    # Every problem of a seed has the same accuracy (no problem or cell noise): the arm's seeds score 0.5, 0.6, 0.7,
    # the reference 0.5 in every seed. The interval is the t-interval over the arm's seeds: 0.1 +- t(0.975, 2) *
    # 0.1 / sqrt(3) = 0.1 +- 0.2484.
    arm = cells([[5] * 4, [6] * 4, [7] * 4], 10)
    ref = cells([[5] * 4] * 3, 10)
    g = gap(arm, ref)
    assert g.value == pytest.approx(0.1) and g.df == pytest.approx(2)
    assert (g.low, g.high) == (pytest.approx(0.1 - 0.24841, abs=1e-4), pytest.approx(0.1 + 0.24841, abs=1e-4))


def test_the_problem_term_is_the_paired_difference_over_problems():
    # Two fixed models, one sample per problem: only the problems vary, and they pair the models. The interval is
    # the t-interval of the mean per-problem difference, n - 1 degrees of freedom.
    rng = np.random.default_rng(1)
    a, r = rng.integers(0, 2, (1, 400)), rng.integers(0, 2, (1, 400))
    d = (a - r)[0]
    fixed = dict(fixed=True)
    g = gap(Cells(a, 1, np.array(["b"] * 400), **fixed), Cells(r, 1, np.array(["b"] * 400), **fixed))
    assert g.se == pytest.approx(d.std(ddof=1) / np.sqrt(400)) and g.df == pytest.approx(399)


def test_sample_noise_of_a_fixed_model_is_binomial():
    # One fixed model, one problem, 2 of 4 samples right: the variance of its accuracy is p(1-p)/(k-1) / 1 problem,
    # the unbiased binomial estimate, 0.25 / 3.
    c = Cells(np.array([[2]]), 4, np.array(["b"]), fixed=True)
    assert contrast([c], [1.0]).se == pytest.approx(np.sqrt(0.25 / 3))


def test_one_trained_seed_has_no_interval_and_benchmarks_count_once():
    arm = cells([[4, 4, 0]], 4, ["x", "x", "y"])
    ref = cells([[4, 4, 4]], 4, ["x", "x", "y"])
    g = gap(arm, ref)
    assert g.value == -0.5 and np.isnan(g.low) and np.isnan(g.high)  # one seed: its seed variance is unknown
    assert gap(arm.only("y"), ref.only("y")).value == -1.0


def test_the_share_is_fieller_and_unbounded_when_the_gain_is_noise():
    rng = np.random.default_rng(3)
    scenario = Scenario(seeds=5, seed_sd=0.03)
    c = scenario.study(rng)
    s = share(c["arm"], c["reference"], c["base"])
    own, gain = c["arm"].mean() - c["base"].mean(), c["reference"].mean() - c["base"].mean()
    assert s.value == pytest.approx(own / gain) and s.low < s.value < s.high
    # The ends are the shares whose contrast arm - base - s (reference - base) has 0 at the edge of its interval.
    for end in (s.low, s.high):
        edge = contrast([c["arm"], c["reference"], c["base"]], [1.0, -end, end - 1.0])
        assert min(abs(edge.low), abs(edge.high)) == pytest.approx(0, abs=5e-4)
    # A reference that gains nothing: no share can be bounded.
    flat = Scenario(seeds=3, reference_shift=0.0, arm_shift=0.0, seed_sd=0.2).study(rng)
    bounded = share(flat["arm"], flat["reference"], flat["base"])
    assert bounded.low == -np.inf and bounded.high == np.inf


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("seed_sd", [0.03, 0.2])  # per-seed Mean@k spread about 0.5 and 2-2.5 points
def test_intervals_cover_at_their_level_in_simulated_studies(seeds, seed_sd):
    """The calibration test: 400 simulated studies with known seed, problem and sample variances and a known true
    gap and share; the 95% intervals must cover the truth in at least 92% of them."""
    measured = coverage(Scenario(seeds=seeds, seed_sd=seed_sd), studies=400, seed=seeds)
    print(f"\ncoverage of the 95% intervals, {seeds} seeds, seed sd {seed_sd} (logit): gap {measured['gap']:.3f}, "
          f"share {measured['share']:.3f} ({measured['share_bounded']:.3f} of the {measured['bounded']:.0%} bounded); "
          f"one-sided 95% bound above the true share in {measured['bound_above']:.3f}")
    assert measured["gap"] >= 0.92 and measured["share"] >= 0.92
    assert measured["bound_above"] <= 0.07  # the verdict's bound errs upward at most about 5% of the time


def test_a_flat_ladder_rarely_shows_a_trend():
    rate = false_trend_rate(Scenario(seeds=3), points=3, studies=200)
    print(f"\nslopes whose 95% interval excludes 0 on flat ladders of 3 points x 3 seeds: {rate:.3f}")
    assert rate <= 0.08


def test_the_trend_fits_a_line_weighted_by_the_points_errors():
    x = np.array([0.0, 1.0, 2.0])
    points = [Interval(v, np.nan, np.nan, 1.0, np.inf, 0.95) for v in (-4.0, -2.0, 0.0)]
    fit = trend(x, points)
    assert fit.slope.value == pytest.approx(2.0) and fit.slope.se == pytest.approx(1 / np.sqrt(2))
    assert fit.start.value == pytest.approx(-4.0) and fit.end.value == pytest.approx(0.0)
    with pytest.raises(ValueError, match="2\\+ points"):
        trend(x[:1], points[:1])


def test_cells_from_records_name_missing_problems():
    records = pd.DataFrame({"benchmark": "b", "problem_id": ["p0", "p0"], "correct": [True, False]})
    c = Cells.from_records([records], pd.Index(["p0"]))
    assert c.correct.tolist() == [[1]] and c.k == 2
    with pytest.raises(ValueError, match="p1"):
        Cells.from_records([records], pd.Index(["p0", "p1"]))


def test_time_to_target_takes_the_first_step_at_the_target():
    curves = pd.DataFrame({
        "arm": ["a"] * 3 + ["b"] * 3, "seed": 0, "gen_step": [0, 1, 2] * 2,
        "eval_accuracy": [0.1, 0.5, 0.4, 0.1, 0.2, 0.3], "train_time": [0, 10, 20, 0, 5, 9],
        "rollouts": [0, 100, 200, 0, 50, 90]})
    out = time_to_target(curves, target=0.45).set_index("arm")
    assert (out.loc["a", "seconds"], out.loc["a", "rollouts"], out.loc["a", "gen_step"]) == (10, 100, 1)
    assert np.isnan(out.loc["b", "seconds"])  # never reached


def test_seed_interval_is_the_t_interval():
    # Closed form: mean 12, s = 2, n = 3, t(0.975, 2) = 4.3027 -> half-width 4.3027 * 2 / sqrt(3) = 4.968.
    mean, low, high = seed_interval(np.array([10.0, 12.0, 14.0]))
    assert mean == 12 and low == pytest.approx(12 - 4.968, abs=1e-3) and high == pytest.approx(12 + 4.968, abs=1e-3)
    assert np.isnan(seed_interval(np.array([5.0]))[1]) and np.isnan(seed_interval(np.array([]))[0])
    assert seed_interval(np.array([1.0, 100.0]), floor=0.0)[1] == 0.0  # t(0.975, 1) = 12.7: unfloored, far below 0


def test_seed_interval_covers_at_its_level():
    rng = np.random.default_rng(0)
    covered = [low <= 0 <= high for low, high in
               (seed_interval(rng.normal(0, 1, 3))[1:] for _ in range(4000))]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.015)


def test_time_to_target_by_arm_counts_runs_that_never_reached():
    reached = pd.DataFrame({"arm": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                            "seconds": [10.0, 14.0, 3.0, np.nan], "rollouts": [100.0, 140.0, 30.0, np.nan]})
    out = time_to_target_by_arm(reached).set_index("arm")
    assert (out.loc["a", "runs"], out.loc["a", "reached"], out.loc["a", "seconds"]) == (2, 2, 12.0)
    assert out.loc["a", "seconds_low"] < 12 < out.loc["a", "seconds_high"]
    assert (out.loc["b", "reached"], out.loc["b", "seconds"]) == (1, 3.0) and np.isnan(out.loc["b", "seconds_high"])
