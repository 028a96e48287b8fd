"""evaluate: k samples per benchmark problem at the paper's evaluation sampling, graded with math-verify.

Reads: models/<model>/, data/prepared/test.parquet; params `evaluate`, `task`, `rollout` (the engine).
Writes: eval/<model>/samples.parquet (per-sample records, schema EvalSamples), eval/<model>/metrics.json
(Mean@k, Pass@j for j = 1, 2, 4, ..., k per benchmark, and their average over benchmarks at the top level, as the
paper's "Avg"; DVC shows it). <model> is `base` or `<arm>-s<seed>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from twogrpo.engine import Sampling, make_engine
from twogrpo.evaluation import first_problems, sample_records
from twogrpo.metrics import benchmark_metrics
from twogrpo.checkpoint import Checkpoint, fingerprint
from twogrpo.io import weights_sha256, write_json, write_parquet
from twogrpo.policy import load_policy
from twogrpo.run import start_stage
from twogrpo.schemas import EvalSamples, Problems, read_table, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a folder name under models/")
    args = parser.parse_args()
    params = start_stage("evaluate")
    cfg = params.evaluate
    model_dir = Path("models") / args.model
    model, tokenizer = load_policy(model_dir)
    engine = make_engine(params.rollout, model, tokenizer, model_dir, cfg.seed)
    test = first_problems(read_table("data/prepared/test.parquet", Problems), cfg.problems)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, n=cfg.samples)
    # Records are saved as they come (checkpoints/eval-<model>/); a rerun after a kill generates only the rest.
    progress = Checkpoint(f"eval-{args.model}", fingerprint(cfg, params.task, params.rollout, test["id"].tolist(),
                                                             weights_sha256(model_dir)))
    records = sample_records(engine, test, params.task.prompt_template, sampling, seed=cfg.seed, progress=progress)
    out = Path("eval") / args.model
    write_parquet(validate(records, EvalSamples, out / "samples.parquet"), out / "samples.parquet")
    write_json(benchmark_metrics(records), out / "metrics.json")
    progress.clear()


if __name__ == "__main__":
    main()
