"""evaluate: k samples per benchmark problem at the paper's evaluation sampling (the grade stage grades them).

Reads: models/<model>/, data/prepared/test.parquet; params `evaluate`, `task`, `rollout` (the engine).
Writes: eval/<model>/generations.parquet (per-sample completions, schema Generations). <model> is `base` or
`<arm>-s<seed>`.

Under `accelerate launch` (runtime.eval_launch) each process samples its share of the problems and the first writes the
gathered records, which equal one process's (twogrpo.evaluation.sample_records).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from twogrpo.checkpoint import Checkpoint
from twogrpo.distributed import Dist
from twogrpo.engine import make_engine
from twogrpo.evaluation import first_problems, sample_records
from twogrpo.io import weights_sha256, write_parquet
from twogrpo.launch import relaunch
from twogrpo.lineage import stage_fingerprint
from twogrpo.policy import check_context, load_policy
from twogrpo.run import start_stage
from twogrpo.sampling import Sampling
from twogrpo.schemas import Generations, Problems, read_table, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a folder name under models/")
    args = parser.parse_args()
    params = start_stage("evaluate")
    relaunch(params.runtime.eval_launch, "stages.evaluate")
    dist = Dist.from_environment()  # several processes under `accelerate launch`; the first one writes
    cfg = params.evaluate
    model_dir = Path("models") / args.model
    model, tokenizer = load_policy(model_dir)
    test = first_problems(read_table("data/prepared/test.parquet", Problems), cfg.problems)
    check_context(tokenizer, model.config.max_position_embeddings, test["problem"].tolist(),
                  params.task.prompt_template, cfg.max_new_tokens, "evaluate.max_new_tokens")
    engine = make_engine(params.rollout, model, tokenizer, model_dir, cfg.seed)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, n=cfg.samples)
    # Each process saves its chunks as they come (checkpoints/eval-<model>[-p<rank>of<world>]/); a rerun after a
    # kill generates only the rest.
    name = f"eval-{args.model}" + (f"-p{dist.rank}of{dist.world}" if dist.world > 1 else "")
    stage = "evaluate-base" if args.model == "base" else "evaluate"
    checkpoint = Checkpoint(name, stage_fingerprint(stage, "stages.evaluate", dataclasses.asdict(params),
                                                    test["id"].tolist(), weights_sha256(model_dir),
                                                    item={"model": args.model}))
    records = sample_records(engine, test, params.task.prompt_template, sampling, seed=cfg.seed, checkpoint=checkpoint,
                             dist=dist)
    if dist.is_main:
        out = Path("eval") / args.model / "generations.parquet"
        write_parquet(validate(records, Generations, out), out)
    dist.close()  # every process's records are written: each may delete its checkpoint
    checkpoint.clear()


if __name__ == "__main__":
    main()
