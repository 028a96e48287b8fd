"""The calibration of the study's intervals (twogrpo/stats.py): how often their 95% intervals cover the truth in
simulated studies with known seed, problem and sample variances and a known true gap and share
(twogrpo/calibration.py), and how often a flat ladder shows a trend.

    python bench/calibration.py             # print the figures
    python bench/calibration.py --record    # also into docs/figures.md, block `calibration`

Its workload is its own (the scenarios below), not params.yaml's. tests/test_stats.py asserts the same coverage
(>= 92% of 400 studies at 3 and 5 seeds); this script prints the whole grid.
"""

from __future__ import annotations

import argparse

import numpy as np
from figures import add_record_flag, recording

from twogrpo.calibration import Scenario, coverage, false_trend_rate

STUDIES = 400
SEED_SDS = (0.03, 0.1, 0.2)  # logit scale: per-seed Mean@k spread of about 0.5, 1 and 2-2.5 points
SEEDS = (2, 3, 5)


def per_seed_spread(scenario: Scenario, studies: int = 50) -> float:
    """The mean standard deviation of the reference arm's per-seed Mean@k (points) in this scenario."""
    rng = np.random.default_rng(0)
    return float(np.mean([100 * scenario.study(rng)["reference"].per_seed().std(ddof=1) for _ in range(studies)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=STUDIES, help="simulated studies per cell")
    add_record_flag(parser, "calibration")
    args = parser.parse_args()
    with recording(args.record):
        default = Scenario()
        true_gap, true_share = default.truth()
        print(f"Simulated studies: {default.problems} problems, k = {default.k} samples, a fixed base and two trained "
              f"arms; true gap {100 * true_gap:+.2f} points, true share {true_share:.1%}. Coverage of the 95% "
              f"intervals over {args.studies} studies per cell (the test requires >= 92% at 3 and 5 seeds, and the "
              f"share's one-sided 95% bound above the truth in at most 7%). An unbounded share (16-GRPO's gain not "
              f"shown) "
              f"counts as covering: it makes no claim.")
        print()
        print("| seeds per arm | seed sd (logit) | per-seed Mean@k spread (points) | gap covered | share covered | "
              "share covered, bounded only (share of studies bounded) | one-sided bound above the true share |")
        print("|---|---|---|---|---|---|---|")
        for seeds in SEEDS:
            for sd in SEED_SDS:
                scenario = Scenario(seeds=seeds, seed_sd=sd)
                measured = coverage(scenario, args.studies, seed=seeds)
                print(f"| {seeds} | {sd} | {per_seed_spread(scenario):.2f} | {measured['gap']:.1%} | "
                      f"{measured['share']:.1%} | {measured['share_bounded']:.1%} ({measured['bounded']:.0%}) | "
                      f"{measured['bound_above']:.1%} |")
        print()
        for points in (2, 3, 4):
            rate = false_trend_rate(Scenario(seeds=3), points=points, studies=args.studies // 2)
            print(f"Flat ladders of {points} points x 3 seeds (the same true gap at every point, {args.studies // 2} "
                  f"ladders): "
                  f"a trend shown in {rate:.1%} (at most 5% expected).")


if __name__ == "__main__":
    main()
