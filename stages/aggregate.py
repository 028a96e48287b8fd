"""aggregate: one summary table over the base policy and every arm x seed, the training curves, and the claims.

Reads: eval/*/metrics.json, runs/*/steps.parquet; params `train` (which arms and seeds to expect).
Fails loudly (BudgetError) if an arm did not see the declared prompts and rollouts.
Writes: results/summary.csv (schema Summary), results/curves.parquet (all ledgers), metrics/claims.json (each arm
against train.reference_group_size's arm: accuracy gap, rollout ratio, training-time ratio; DVC shows it).
"""

from __future__ import annotations

from pathlib import Path

from twogrpo.config import ParamsError
from twogrpo.io import write_csv, write_json, write_parquet
from twogrpo.run import start_stage
from twogrpo.summary import check_budgets, claims, summarise


def main() -> None:
    params = start_stage("aggregate")
    cfg = params.train
    references = [name for name, arm in cfg.arms.items()
                  if arm.group_size == cfg.reference_group_size and cfg.lr(arm) == cfg.reference_lr]
    if not references:
        raise ParamsError(f"train.arms has no arm with group_size={cfg.reference_group_size} at the reference lr; "
                          f"the claims compare every arm against it")
    summary, curves = summarise(cfg, Path("eval"), Path("runs"))
    check_budgets(cfg, summary)
    write_csv(summary, "results/summary.csv")
    write_parquet(curves, "results/curves.parquet")
    resampling = frozenset(name for name, arm in cfg.arms.items() if arm.resample)
    write_json({"reference_arm": references[0], "arms": claims(summary, references[0], resampling)},
               "metrics/claims.json")


if __name__ == "__main__":
    main()
