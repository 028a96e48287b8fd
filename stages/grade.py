"""grade: an evaluation's samples graded, and its metrics; apart from generation, so a grader change regrades only.

Reads: eval/<model>/generations.parquet, data/prepared/test.parquet (the gold answers); params `grading`.
Writes: eval/<model>/samples.parquet (per-sample records, schema EvalSamples: graded by grading.evaluation, with
every grader's verdict beside it), eval/<model>/metrics.json (Mean@k, Maj@k, Pass@j for j = 1, 2, 4, ..., k per
benchmark, and their average over benchmarks at the top level, as the paper's "Avg"; `mean_at_k_by_grader`: Mean@k
under each grader; a cached output, not a DVC metric). <model> is `base` or `<arm>-s<seed>`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from twogrpo.grading import GRADERS, correct_column, graded_by_all
from twogrpo.io import atomic_paths, write_json, write_parquet
from twogrpo.metrics import benchmark_metrics
from twogrpo.run import start_stage
from twogrpo.schemas import EvalSamples, Generations, Problems, read_table, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a folder name under eval/")
    args = parser.parse_args()
    params = start_stage("grade")
    out = Path("eval") / args.model
    generations = read_table(out / "generations.parquet", Generations)
    records = graded_by_all(generations, read_table("data/prepared/test.parquet", Problems), params.grading.metric)
    metrics = benchmark_metrics(records)
    metrics["grader"] = params.grading.metric
    metrics["mean_at_k_by_grader"] = {
        name: benchmark_metrics(records.assign(correct=records[correct_column(name)]))["mean_at_k"] for name in GRADERS}
    samples = validate(records, EvalSamples, out / "samples.parquet")
    with atomic_paths(out / "samples.parquet", out / "metrics.json") as (samples_tmp, metrics_tmp):
        write_parquet(samples, samples_tmp)
        write_json(metrics, metrics_tmp)
    k = metrics["k"]
    logging.getLogger("grade").info(
        "%s: Mean@%d %.2f, Pass@%d %.2f (points, %d problems of %s, graded by %s)", args.model, k,
        100 * metrics["mean_at_k"], k, 100 * metrics["pass_at_k"], metrics["problems"],
        ", ".join(metrics["benchmarks"]), metrics["grader"])


if __name__ == "__main__":
    main()
