"""aggregate: one summary table over the base policy and every arm x seed, the training curves, and the claims with
their uncertainty.

Reads: eval/*/metrics.json and eval/*/samples.parquet, runs/*/steps.parquet; params `train` (which arms and seeds to
expect), `report` (bootstrap, target). Fails loudly (BudgetError) if an arm did not see the declared prompts and rollouts.
Writes: results/summary.csv (schema Summary; accuracy averaged over benchmarks), results/benchmarks.csv (schema
BenchmarkResults, per benchmark), results/pass_at_k.csv (Pass@j for j = 1..k per model and
benchmark, from the samples), results/curves.csv
(all ledgers), results/time_to_target.csv (per run),
metrics/claims.json (each arm against train.reference_group_size's arm: accuracy gap with its 95% bootstrap interval
on average and per benchmark, rollout ratio, training-time ratio and the work it was measured on; DVC shows it).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from twogrpo.config import TrainConfig
from twogrpo.io import atomic_paths, write_csv, write_json
from twogrpo.run import start_stage
from twogrpo.stats import Cells, bootstrap_gap, time_to_target
from twogrpo.summary import (Evaluated, benchmark_results, check_budgets, claims, load_evaluations, pass_curves,
                             summarise, time_mode)

EVAL = Path("eval")


def arm_cells(cfg: TrainConfig, evaluated: list[Evaluated]) -> dict[str, Cells]:
    """Every arm's per-sample evaluation records as bootstrap cells, problems in the reference arm's order."""
    records = {name: [ev.samples for ev in evaluated if ev.arm == name] for name in cfg.arms}
    order = pd.Index(records[cfg.reference_arm][0]["problem_id"].unique())
    return {name: Cells.from_records(per_seed, order) for name, per_seed in records.items()}


def main() -> None:
    params = start_stage("aggregate")
    cfg, report = params.train, params.report
    reference = cfg.reference_arm  # fails before any work if there is none
    evaluated = load_evaluations(cfg, EVAL)
    summary, curves = summarise(cfg, evaluated, Path("runs"))
    check_budgets(cfg, summary)
    cells = arm_cells(cfg, evaluated)
    intervals = {name: bootstrap_gap(cells[name], cells[reference], report.bootstrap_samples, report.bootstrap_seed)
                 for name in cfg.arms if name != reference}
    final = curves[curves["arm"] == reference].groupby("seed")["eval_accuracy"].last().mean()
    reached = time_to_target(curves, report.target_fraction * final)
    resampling = frozenset(name for name, arm in cfg.arms.items() if arm.resample)
    tables = {"summary": summary, "benchmarks": benchmark_results(evaluated), "curves": curves,
              "time_to_target": reached, "pass_at_k": pass_curves(evaluated)}
    claimed = {"reference_arm": reference, "grader": evaluated[0].metrics.get("grader", ""),
               "arms": claims(summary, reference, intervals, resampling, time_mode(cfg))}
    with atomic_paths(*(f"results/{name}.csv" for name in tables), "metrics/claims.json") as (*csvs, claims_tmp):
        for table, path in zip(tables.values(), csvs, strict=True):
            write_csv(table, path)
        write_json(claimed, claims_tmp)


if __name__ == "__main__":
    main()
