"""The embedded study's GRPO training, run by our trainer on whatever device policy_device() picks (a GPU if any).

    python bench/gpu_train_arms.py                          # g16 and g2-same-lr, seed 0, the study's settings
    python bench/gpu_train_arms.py --prompts 128 --arms g2  # a short check
    python bench/gpu_train_arms.py --prompts 8 --epochs 1 --arms g2  # the smallest run
    python bench/gpu_train_arms.py --record                 # also write the table into docs/figures.md

Needs what `dvc repro base` wrote (models/base, data/prepared) and params.yaml. Its workload is the study's train
section (it compares with the study's own CPU runs), unless --prompts or --epochs cut it. It calls train_grpo exactly
as stages/train.py does (its in-training evaluation on the validation split), minus dvclive, so it runs where only
torch, transformers, pandas and math-verify are installed.
Prints the device, each arm's training seconds per phase, rollouts and in-training eval accuracy, the 2-GRPO /
16-GRPO time ratio, and, when runs/<arm>-s<seed>/steps.parquet exists here, the same figures from that (CPU) run.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import pandas as pd
import torch
from figures import add_record_flag, recording

from twogrpo.choices import PHASES
from twogrpo.config import load_params
from twogrpo.engine import make_engine
from twogrpo.policy import load_policy, policy_device
from twogrpo.trainer import Policy, TrainData, TrainRun, train_grpo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["g16", "g2-same-lr"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=0, help="train prompts (0: train.prompts)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (0: train.epochs)")
    add_record_flag(parser, "gpu_train_arms")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    params = load_params("params.yaml")
    cut = args.prompts or args.epochs
    cfg = dataclasses.replace(params.train, prompts=args.prompts or params.train.prompts,
                              epochs=args.epochs or params.train.epochs)
    cfg.check()
    device = policy_device()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.machine()})"
    print(f"# {name}; torch {torch.__version__}; {cfg.prompts} prompts x {cfg.epochs} epoch(s); seed {args.seed}",
          flush=True)
    train = pd.read_parquet("data/prepared/train.parquet").iloc[: cfg.prompts]
    validation = pd.read_parquet("data/prepared/validation.parquet")
    seconds = {}
    print("| arm | device | train s | " + " | ".join(PHASES) + " | rollouts | final eval accuracy | wall s |")
    print("|---" * (6 + len(PHASES)) + "|")
    for arm_name in args.arms:
        arm = cfg.arm(arm_name)
        model, tokenizer = load_policy("models/base")
        engine = make_engine(params.rollout, model, tokenizer, "models/base", args.seed)
        start = time.perf_counter()
        run_settings = TrainRun(params.task, cfg, arm, params.evaluate, args.seed, params.grading.reward)
        ledger = train_grpo(run_settings, Policy(model, tokenizer, engine), TrainData(train, validation))
        wall = time.perf_counter() - start
        if len(ledger) - 1 != cfg.steps_per_epoch * cfg.epochs:
            raise RuntimeError(f"{arm_name}: ran {len(ledger) - 1} generation steps, not the "
                               f"{cfg.steps_per_epoch * cfg.epochs} asked")
        rows = [(device.type, ledger.iloc[-1], wall)]
        cpu_run = Path("runs") / f"{arm_name}-s{args.seed}" / "steps.parquet"
        if cpu_run.exists() and not cut:
            rows.append(("cpu (dvc repro, this checkout)", pd.read_parquet(cpu_run).iloc[-1], float("nan")))
        for where, last, w in rows:
            print(f"| {arm_name} | {where} | {last['train_time']:.1f} | "
                  + " | ".join(f"{last[f'time_{p}']:.1f}" for p in PHASES)
                  + f" | {int(last['rollouts']):,} | {last['eval_accuracy']:.3f} | {w:.1f} |", flush=True)
        seconds[arm_name] = ledger.iloc[-1]["train_time"]
    reference = cfg.reference_arm
    for arm_name, s in seconds.items():
        if arm_name != reference and reference in seconds:
            print(f"time ratio {arm_name} / {reference} on {device.type}: {s / seconds[reference]:.3f}")


if __name__ == "__main__":
    main()
