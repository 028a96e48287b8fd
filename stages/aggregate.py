"""aggregate: one summary table over the base policy and every arm x seed, the training curves, and the claims.

Reads: eval/*/metrics.json, runs/*/steps.parquet; params `train` (which arms and seeds to expect).
Fails loudly (BudgetError) if an arm did not see the declared prompts and rollouts.
Writes: results/summary.csv (schema Summary; accuracy averaged over benchmarks), results/benchmarks.csv (schema
BenchmarkResults, per benchmark), results/curves.parquet (all ledgers), metrics/claims.json (each arm
against train.reference_group_size's arm: accuracy gap, rollout ratio, training-time ratio; DVC shows it).
"""

from __future__ import annotations

from pathlib import Path

from twogrpo.io import write_csv, write_json, write_parquet
from twogrpo.run import start_stage
from twogrpo.summary import benchmark_results, check_budgets, claims, summarise


def main() -> None:
    params = start_stage("aggregate")
    cfg = params.train
    reference = cfg.reference_arm  # fails before any work if there is none
    summary, curves = summarise(cfg, Path("eval"), Path("runs"))
    check_budgets(cfg, summary)
    write_csv(summary, "results/summary.csv")
    write_csv(benchmark_results(cfg, Path("eval")), "results/benchmarks.csv")
    write_parquet(curves, "results/curves.parquet")
    resampling = frozenset(name for name, arm in cfg.arms.items() if arm.resample)
    write_json({"reference_arm": reference, "arms": claims(summary, reference, resampling)}, "metrics/claims.json")


if __name__ == "__main__":
    main()
