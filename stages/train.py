"""train: GRPO from the base policy for one arm and one seed (a DVC matrix over train.arms x train.seeds).

Reads: models/base/, data/prepared/{train,validation}.parquet (never the test set); params: the train keys that shape
a run (dvc.yaml lists them), `task`, `grading.reward`, the engine of `rollout`, the in-training evaluation's sampling
of `evaluate`; `runtime` (how it runs).
Started as `python -m stages.train`; under runtime.launch = `accelerate launch ...` it starts itself again under it.
Writes: models/<arm>-s<seed>/ (the trained policy), runs/<arm>-s<seed>/steps.parquet (ledger, schema TrainSteps),
runs/<arm>-s<seed>/live/ (dvclive per-step metrics), runs/<arm>-s<seed>/validation.parquet (the final policy on
every validation problem of train.eval_benchmark, schema ValidationSamples: what the package's choices read). Keeps
checkpoints/<arm>-s<seed>/ every runtime.checkpoint_every generation steps while it runs (not a DVC output, so it
survives a kill): rerun, the stage resumes from it, and deletes it once the outputs are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import math
from contextlib import nullcontext
from pathlib import Path

import torch
from dvclive import Live

from twogrpo.checkpoint import Checkpoint, Checkpointing
from twogrpo.choices import PHASES
from twogrpo.config import Params
from twogrpo.distributed import Dist, full_state_dict, unsharded
from twogrpo.engine import make_engine
from twogrpo.io import atomic_paths, files_sha256, weights_sha256, write_parquet
from twogrpo.launch import relaunch
from twogrpo.lineage import stage_fingerprint
from twogrpo.plan import stop_unless_this_machine_fits
from twogrpo.policy import check_context, load_policy
from twogrpo.run import start_stage
from twogrpo.schemas import DataError, Problems, TrainSteps, ValidationSamples, read_table, validate
from twogrpo.telemetry import STEP_STATS
from twogrpo.trainer import Policy, TrainData, TrainRun, train_grpo, validation_records

log = logging.getLogger("train")
# What the stage reads of other sections than train (its train keys: TrainConfig.dependency_keys); `python -m
# tools.deps` writes dvc.yaml's params list from both.
OTHER_PARAMS = ("task", "grading.reward", "rollout.engine", "rollout.vllm_dtype", "evaluate.temperature",
                "evaluate.top_p", "evaluate.top_k", "evaluate.max_new_tokens", "evaluate.seed")
VALIDATION = "data/prepared/validation.parquet"  # what the in-training evaluation reads: never the test set
LOGGED = (*STEP_STATS, "prompts_seen", "rollouts", "tokens", "opt_steps", "rs_budget_used", "lr", "train_time",
          *(f"time_{p}" for p in PHASES), "eval_accuracy", "eval_kl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    params = start_stage("train")
    stop_unless_this_machine_fits(params, "train", "models/base")  # the GPUs and their free memory
    relaunch(params.runtime.launch, "stages.train")
    dist = Dist.from_environment()  # several processes under `accelerate launch`; the first one writes
    train(args, params, dist)
    dist.close()  # after train() has released the model (Dist.close)


def train(args: argparse.Namespace, params: Params, dist: Dist) -> None:
    run = TrainRun.of(params, args.arm, args.seed)
    name = f"{args.arm}-s{args.seed}"
    log.info("arm %s: G=%d, %d prompts per mini-batch, lr %.3g", name, run.arm.group_size,
             params.train.prompts_per_minibatch(run.arm), params.train.lr(run.arm))
    model, tokenizer = load_policy("models/base")
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn"):
        model.set_attn_implementation("flash_attention_2")  # micro-batches by token budget packed, without padding
    if params.runtime.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    train_table = read_table("data/prepared/train.parquet", Problems)
    if len(train_table) < params.train.prompts:
        raise DataError(f"data/prepared/train.parquet: {len(train_table)} problems, fewer than train.prompts="
                        f"{params.train.prompts}")
    prompts = train_table.iloc[: params.train.prompts]
    validation = read_table(VALIDATION, Problems)
    positions, template = model.config.max_position_embeddings, params.task.prompt_template
    check_context(tokenizer, positions, prompts["problem"].tolist(), template, params.task.max_new_tokens,
                  "task.max_new_tokens")
    validation = validation[validation["dataset"] == params.train.eval_benchmark]
    check_context(tokenizer, positions, validation["problem"].tolist(), template,
                  params.evaluate.max_new_tokens, "evaluate.max_new_tokens")
    engine = make_engine(params.rollout, model, tokenizer, "models/base", args.seed)
    run_dir = Path("runs") / name
    # What shapes the run (dvc.yaml's params and code for this stage, the base weights, the processes, the data); a
    # checkpoint saved under other settings is not resumed (memory-only settings aside: after running out of memory,
    # a smaller micro-batch resumes).
    checkpoint = Checkpoint(name, stage_fingerprint("train", "stages.train", dataclasses.asdict(params),
                                                    weights_sha256("models/base"), dist.world,
                                                    files_sha256("data/prepared/train.parquet", VALIDATION),
                                                    item={"arm": args.arm, "seed": args.seed},
                                                    ignore=params.train.memory_only_keys))
    # The run's folder (ledger, dvclive log) and the model, together or not at all (the first process writes them).
    outputs = atomic_paths(run_dir, Path("models") / name) if dist.is_main else nullcontext((None, None))
    with outputs as (run_tmp, model_tmp):
        live = Live(dir=str(run_tmp / "live"), save_dvc_exp=False, dvcyaml=None, report=None) if dist.is_main else None

        def on_step(row: dict) -> None:
            if live is None:
                return
            for key in LOGGED:
                if not math.isnan(row[key]):
                    live.log_metric(f"train/{key}", row[key])
            live.next_step()

        ledger = train_grpo(run, Policy(model, tokenizer, engine), TrainData(prompts, validation), on_step=on_step,
                            checkpointing=Checkpointing(params.runtime.checkpoint_every,
                                                        lambda state: checkpoint.save(state, state["gen_step"]),
                                                        resume=checkpoint.load()),
                            dist=dist)
        if live is not None:
            live.end()
        final = validation_records(engine, validation, run, dist)
        weights = full_state_dict(model)  # every process takes part when the weights are sharded
        if dist.is_main:
            write_parquet(validate(ledger, TrainSteps, run_dir / "steps.parquet"), run_tmp / "steps.parquet")
            write_parquet(validate(final, ValidationSamples, run_dir / "validation.parquet"),
                          run_tmp / "validation.parquet")
            unsharded(model, weights).save_pretrained(model_tmp)
            tokenizer.save_pretrained(model_tmp)
    if dist.is_main:
        checkpoint.clear()  # the outputs are complete: nothing left to resume


if __name__ == "__main__":
    main()
