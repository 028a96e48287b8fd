"""The bootstrap intervals and time-to-target against exact enumeration and hand-made cases."""

import itertools

import numpy as np
import pandas as pd
import pytest

from twogrpo.stats import Cells, bootstrap_gap, seed_interval, time_to_target, time_to_target_by_arm


def cells(correct, k, benchmarks=None):
    correct = np.asarray(correct)
    return Cells(correct, k, np.asarray(benchmarks or ["b"] * correct.shape[1]))


def test_problem_resampling_matches_the_exact_bootstrap_distribution():
    # One seed, one sample per problem: only problems vary. The arm beats the reference on 1 of 3 problems, so the
    # bootstrap gap is (picks of that problem) / 3, picks ~ Binomial(3, 1/3): P = 8/27, 12/27, 6/27, 1/27 for
    # 0, 1/3, 2/3, 1. The exact 2.5% and 97.5% quantiles are 0 and 1.
    exact = {}
    for draw in itertools.product(range(3), repeat=3):
        gap = sum(p == 0 for p in draw) / 3
        exact[gap] = exact.get(gap, 0) + 1 / 27
    assert exact[1.0] == pytest.approx(1 / 27) and sum(v for g, v in exact.items() if g < 1) < 0.975
    out = bootstrap_gap(cells([[1, 0, 0]], 1), cells([[0, 0, 0]], 1), n_boot=4000, seed=0)["b"]
    assert out["gap"] == pytest.approx(1 / 3)
    assert (out["low"], out["high"]) == (0.0, 1.0)


def test_problem_resampling_has_the_closed_form_spread():
    # The bootstrap variance of a mean of n paired differences is their population variance / n.
    rng = np.random.default_rng(1)
    arm, ref = rng.integers(0, 2, (1, 400)), rng.integers(0, 2, (1, 400))
    d = (arm - ref)[0]
    sd = np.sqrt(d.var() / len(d))
    out = bootstrap_gap(cells(arm, 1), cells(ref, 1), n_boot=4000, seed=0)["b"]
    assert (out["high"] - out["low"]) / (2 * 1.96 * sd) == pytest.approx(1, abs=0.08)


def test_sample_resampling_is_binomial():
    # One seed, one problem, 2 of 4 samples right: the replicate accuracy is Binomial(4, 1/2) / 4, whose exact
    # 2.5% and 97.5% quantiles are 0 and 1 (P(0) = P(4) = 1/16 > 2.5%).
    out = bootstrap_gap(cells([[2]], 4), cells([[2]], 4), n_boot=4000, seed=0)["b"]
    assert out["arm_mean"] == 0.5 and (out["arm_low"], out["arm_high"]) == (0.0, 1.0)


def test_seed_resampling_spans_the_seeds():
    # Two seeds, 0 and 100 of 100 samples right on the one problem: resampled seeds give 0, 0.5 or 1.
    out = bootstrap_gap(cells([[0], [100]], 100), cells([[50], [50]], 100), n_boot=4000, seed=0)["b"]
    assert out["arm_low"] == pytest.approx(0.0, abs=0.05) and out["arm_high"] == pytest.approx(1.0, abs=0.05)


def test_no_variability_gives_a_point_and_the_average_counts_benchmarks_once():
    arm = cells([[4, 4, 0]], 4, ["x", "x", "y"])
    ref = cells([[4, 4, 4]], 4, ["x", "x", "y"])
    out = bootstrap_gap(arm, ref, n_boot=200, seed=0)
    assert (out["x"]["gap"], out["x"]["low"], out["x"]["high"]) == (0.0, 0.0, 0.0)
    assert (out["y"]["gap"], out["y"]["low"], out["y"]["high"]) == (-1.0, -1.0, -1.0)
    assert out["average"]["gap"] == -0.5 and out["average"]["low"] == out["average"]["high"] == -0.5


def test_the_bootstrap_is_fixed_by_its_seed():
    arm, ref = cells([[1, 0, 1, 1], [0, 0, 1, 1]], 1), cells([[1, 1, 0, 0], [0, 1, 1, 0]], 1)
    assert bootstrap_gap(arm, ref, 300, seed=5) == bootstrap_gap(arm, ref, 300, seed=5)


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
