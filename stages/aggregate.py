"""aggregate: one summary table over the base policy and every arm x seed, the training curves, and the claims with
their uncertainty.

Reads: eval/*/metrics.json and eval/*/samples.parquet (the test set), runs/*/steps.parquet and
runs/*/validation.parquet; params `train` (which arms and seeds to expect), `report` (target). Fails loudly
(BudgetError) if an arm did not see the declared prompts and rollouts.
Writes: results/summary.csv (schema Summary; accuracy averaged over benchmarks), results/benchmarks.csv (schema
BenchmarkResults, per benchmark), results/pass_at_k.csv (Pass@j for j = 1..k per model and benchmark, from the
samples), results/curves.csv (all ledgers), results/time_to_target.csv (per run),
metrics/claims.json (each arm against train.reference_group_size's arm on the test set: accuracy gap and share of
the gain with their 95% intervals (twogrpo.stats), rollout ratio, training-time ratio and the work it was measured on;
under "validation", each arm's accuracy and gap on the validation problems, which choices read), and
metrics/verdicts.json (twogrpo.paper.headline: per arm the gap, share, ratios and verdicts; the headline metrics, so
that `dvc exp show` compares experiments in a few columns).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from twogrpo.config import TrainConfig
from twogrpo.io import atomic_paths, write_csv, write_json
from twogrpo.paper import headline
from twogrpo.run import start_stage
from twogrpo.schemas import ValidationSamples, read_table
from twogrpo.stats import Cells, time_to_target
from twogrpo.summary import (
    Evaluated,
    accuracy_claims,
    benchmark_results,
    check_budgets,
    claims,
    load_evaluations,
    pass_curves,
    summarise,
    time_mode,
    validation_claims,
)

EVAL = Path("eval")
RUNS = Path("runs")


def model_cells(cfg: TrainConfig, evaluated: list[Evaluated]) -> dict[str, Cells]:
    """The base policy's (fixed: one model shared by every arm) and every arm's test records as cells, problems in
    the base's order."""
    records = {name: [ev.samples for ev in evaluated if ev.arm == name] for name in ("base", *cfg.arms)}
    order = pd.Index(records["base"][0]["problem_id"].unique())
    return {name: Cells.from_records(per_seed, order, fixed=name == "base") for name, per_seed in records.items()}


def validation_cells(cfg: TrainConfig) -> dict[str, Cells]:
    """Every arm's final validation records (runs/<arm>-s<seed>/validation.parquet) as cells."""
    records = {name: [read_table(RUNS / f"{name}-s{seed}" / "validation.parquet", ValidationSamples)
                      for seed in cfg.seeds] for name in cfg.arms}
    order = pd.Index(records[cfg.reference_arm][0]["problem_id"].unique())
    return {name: Cells.from_records(per_seed, order) for name, per_seed in records.items()}


def main() -> None:
    params = start_stage("aggregate")
    cfg, report = params.train, params.report
    reference = cfg.reference_arm  # fails before any work if there is none
    evaluated = load_evaluations(cfg, EVAL)
    summary, curves = summarise(cfg, evaluated, RUNS)
    check_budgets(cfg, summary)
    final = curves[curves["arm"] == reference].groupby("seed")["eval_accuracy"].last().mean()
    reached = time_to_target(curves, report.target_fraction * final)
    resampling = frozenset(name for name, arm in cfg.arms.items() if arm.resample)
    tables = {"summary": summary, "benchmarks": benchmark_results(evaluated), "curves": curves,
              "time_to_target": reached, "pass_at_k": pass_curves(evaluated)}
    claimed = {"reference_arm": reference, "grader": evaluated[0].metrics.get("grader", ""),
               "arms": claims(summary, reference, accuracy_claims(model_cells(cfg, evaluated), reference),
                              resampling, time_mode(cfg)),
               "validation": validation_claims(validation_cells(cfg), reference)}
    verdicts = headline(claimed, report.equivalence_margin, report.share_margin)
    outputs = (*(f"results/{name}.csv" for name in tables), "metrics/claims.json", "metrics/verdicts.json")
    with atomic_paths(*outputs) as (*csvs, claims_tmp, verdicts_tmp):
        for table, path in zip(tables.values(), csvs, strict=True):
            write_csv(table, path)
        write_json(claimed, claims_tmp)
        write_json(verdicts, verdicts_tmp)
    log_verdicts(verdicts, reference)


def log_verdicts(verdicts: dict, reference: str) -> None:
    """Each arm against the reference: a line of numbers, then a line per claim with its verdict (one line for all
    of them outgrew a terminal's width once the time verdict named the contended runs)."""
    log = logging.getLogger("aggregate")
    for arm, v in verdicts.items():
        log.info("%s vs %s: gap %+.2f [%+.2f, %+.2f] points, share of the gain %.0f%% (one-sided bound %.0f%%), "
                 "rollout ratio %.3f, time ratio %.3f", arm, reference, v["gap"], v["gap_low"], v["gap_high"],
                 100 * v["share"], 100 * v["share_bound"], v["rollout_ratio"], v["time_ratio"])
        for claim, text in v["verdict"].items():
            log.info("%s verdict on %s: %s", arm, claim, text)


if __name__ == "__main__":
    main()
