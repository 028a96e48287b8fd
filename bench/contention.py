"""What a busy machine does to a training run's timings: the same 16-GRPO (reference arm) generation steps on a quiet
machine, beside one CPU-burning process, and beside one per core. The signal the study flags contention by
(twogrpo.summary.CONTENDED_WAIT_SHARE) is the share of the run's wall-clock its threads waited for a CPU.

    python bench/contention.py                       # 2 generation steps per run (dvc repro base first)
    python bench/contention.py --gen-steps 1         # the smallest run
    python bench/contention.py --record              # also into docs/figures.md, block `contention`

The workload is pinned here, not read from params.yaml's train section: its reference arm (16-GRPO), one epoch of
--gen-steps generation batches, from models/base, with the study's task and sampling. Nothing else heavy may run
beside it (that is what it measures).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
from contextlib import contextmanager

import pandas as pd
import torch
from figures import add_record_flag, recording

from twogrpo.config import load_params
from twogrpo.engine import HFEngine
from twogrpo.policy import load_policy
from twogrpo.summary import CONTENDED_WAIT_SHARE
from twogrpo.trainer import Policy, TrainData, TrainRun, train_grpo


@contextmanager
def cpu_burners(count: int):
    """`count` processes that each keep one core busy."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def timed_run(params, train: pd.DataFrame, validation: pd.DataFrame, gen_steps: int) -> pd.Series:
    """The ledger's last row after `gen_steps` generation steps of the reference arm (its in-training evaluation
    never runs), with the load average at the start."""
    cfg = dataclasses.replace(params.train, prompts=params.train.generation_batch_prompts * gen_steps, epochs=1,
                              eval_every=10**9, eval_problems=1)
    cfg.check()
    model, tokenizer = load_policy("models/base")
    run = TrainRun(params.task, cfg, cfg.arm(cfg.reference_arm), params.evaluate, 0, params.grading.reward)
    ledger = train_grpo(run, Policy(model, tokenizer, HFEngine(model, tokenizer)), TrainData(train, validation))
    if len(ledger) - 1 != gen_steps:
        raise RuntimeError(f"ran {len(ledger) - 1} generation steps, not the {gen_steps} asked")
    return pd.concat([ledger.iloc[-1], pd.Series({"load_start": ledger.iloc[0]["load_average"]})])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gen-steps", type=int, default=2)
    add_record_flag(parser, "contention")
    args = parser.parse_args()
    with recording(args.record):
        run(args.gen_steps)


def run(gen_steps: int) -> None:
    params = load_params("params.yaml")
    torch.set_num_threads(params.runtime.threads or os.cpu_count() or 1)
    cores = os.cpu_count() or 1
    train = pd.read_parquet("data/prepared/train.parquet").iloc[: params.train.generation_batch_prompts * gen_steps]
    validation = pd.read_parquet("data/prepared/validation.parquet")
    print(f"# {platform.processor() or platform.machine()}, {cores} cores, {torch.get_num_threads()} torch threads; "
          f"arm {params.train.reference_arm}: {gen_steps} generation steps of {params.train.generation_batch_prompts} "
          f"prompts x {params.train.reference_group_size} rollouts "
          f"from models/base. Flagged as contended above a wait share of {CONTENDED_WAIT_SHARE:.0%}.")
    print()
    print("| beside the run | wall-clock s | CPU s | CPU s / wall-clock s | waited for a CPU, share of wall-clock | "
          "load average, start -> end | flagged |")
    print("|---|---|---|---|---|---|---|")
    quiet = None
    for burners in (0, 1, cores):
        with cpu_burners(burners):
            last = timed_run(params, train, validation, gen_steps)
        wall, cpu, share = last["train_time"], last["train_cpu_time"], last["train_cpu_wait"] / last["train_time"]
        quiet = quiet or (wall, cpu)
        beside = "nothing" if not burners else f"{burners} CPU-burning process" + "es" * (burners > 1)
        print(f"| {beside} | {wall:.1f} ({wall / quiet[0]:.2f}x quiet) | {cpu:.1f} ({cpu / quiet[1]:.2f}x quiet) | "
              f"{cpu / wall:.2f} | "
              f"{share:.1%} | {last['load_start']:.2f} -> {last['load_average']:.2f} | "
              f"{'yes' if share > CONTENDED_WAIT_SHARE else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
