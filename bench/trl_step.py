"""Our GRPO generation step against TRL's GRPOTrainer, side by side in one process, at the embedded default's scale.

    python bench/trl_step.py                              # G = 16 and G = 2, 3 generation steps, 2 repeats
    python bench/trl_step.py --groups 2 --gen-steps 2 --repeats 1
    python bench/trl_step.py --record                     # also write the tables into docs/figures.md

A generation step is the whole cycle: generation of generation_batch_prompts x G rollouts (HF `generate`, 32 new
tokens at most), math-verify rewards, old log-probs, and one optimizer step per mini-batch of rollouts_per_minibatch
rollouts. Both trainers get the same model (models/base: `dvc repro base` first), the same rendered prompts of
data/prepared/train.parquet, the same reward function, learning rate, clip (0.2 / 0.28), no KL, token-mean loss
(TRL's "bnpo"), float32, and the same torch threads. TRL (the pinned dev dependency, trl==1.16.0) computes old
log-probs here as ours does, because a generation batch feeds several optimizer steps. The runs alternate (ours,
TRL, ...) so that the machine's drift hits both; the math-verify cache is cleared before each run. "ours" skips
dead groups in the update (train.skip_dead_groups=true, a speed option, with loss_agg token-mean); "ours, full pass"
runs every rollout through it, as verl and TRL do (the default).
Ours is timed by its phase timers (its in-training evaluation excluded), TRL from its first step's start to each
generation cycle's last step (a callback). Prints one row per run, the medians and the TRL / ours ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import tempfile
import time

import pandas as pd
import torch
import trl
from datasets import Dataset
from figures import add_record_flag, recording
from transformers import PrinterCallback, TrainerCallback

from twogrpo.choices import PHASES
from twogrpo.config import load_params
from twogrpo.engine import HFEngine
from twogrpo.grading import clear_cache, rewards
from twogrpo.policy import load_policy, render_prompts
from twogrpo.trainer import Policy, TrainData, TrainRun, train_grpo

ARMS = {16: "g16", 2: "g2"}


def ours(params, arm_name: str, train: pd.DataFrame, validation: pd.DataFrame, gen_steps: int,
         skip_dead: bool) -> dict:
    # The workload is pinned here: one epoch of gen_steps generation batches, whatever params.yaml's epochs.
    cfg = dataclasses.replace(params.train, prompts=params.train.generation_batch_prompts * gen_steps, epochs=1,
                              eval_every=10**9, eval_problems=1, skip_dead_groups=skip_dead,
                              loss_agg="token-mean")
    cfg.check()
    model, tokenizer = load_policy("models/base")
    clear_cache()
    run = TrainRun(params.task, cfg, cfg.arm(arm_name), params.evaluate, 0, params.grading.reward)
    ledger = train_grpo(run, Policy(model, tokenizer, HFEngine(model, tokenizer)), TrainData(train, validation))
    steps = ledger.iloc[1:]
    if len(steps) != gen_steps:
        raise RuntimeError(f"ours ran {len(steps)} generation steps, not the {gen_steps} asked")
    return {"seconds": steps["train_time"].diff().fillna(steps["train_time"]).tolist(),
            "rollouts": int(ledger.iloc[-1]["rollouts"]), "tokens": int(ledger.iloc[-1]["tokens"]),
            "reward": float(steps["mean_reward"].mean()),
            "phases": {p: float(ledger.iloc[-1][f"time_{p}"]) for p in PHASES}}


class Clock(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.times = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def trl_run(params, arm_name: str, train: pd.DataFrame, gen_steps: int) -> dict:
    cfg = params.train
    arm = cfg.arm(arm_name)
    G = arm.group_size
    model, tokenizer = load_policy("models/base")
    prompts = render_prompts(tokenizer, train["problem"].tolist(), params.task.prompt_template)
    per_generation = cfg.generation_batch_prompts * G // cfg.rollouts_per_minibatch  # optimizer steps per cycle

    def correct(completions, answer, **_):
        return rewards(list(answer), list(completions))

    with tempfile.TemporaryDirectory() as out:
        args = trl.GRPOConfig(
            output_dir=out, per_device_train_batch_size=cfg.rollouts_per_minibatch, gradient_accumulation_steps=1,
            steps_per_generation=per_generation, num_generations=G, max_completion_length=params.task.max_new_tokens,
            temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, loss_type="bnpo", beta=0.0,
            epsilon=cfg.clip_low, epsilon_high=cfg.clip_high, learning_rate=cfg.lr(arm), lr_scheduler_type="constant",
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip, max_steps=per_generation * gen_steps,
            report_to=[], use_cpu=True, logging_steps=1, save_strategy="no", bf16=False, fp16=False,
            disable_tqdm=True, shuffle_dataset=False, seed=0)
        clock = Clock()
        trainer = trl.GRPOTrainer(model=model, args=args, processing_class=tokenizer, reward_funcs=correct,
                                  train_dataset=Dataset.from_dict({"prompt": prompts, "answer": train["answer"]}),
                                  callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # its per-step log lines; the log history is still kept
        clear_cache()
        trainer.train()
    ends = clock.times[::per_generation]
    if len(ends) - 1 != gen_steps:
        raise RuntimeError(f"TRL ran {len(ends) - 1} generation cycles, not the {gen_steps} asked")
    logs = [row for row in trainer.state.log_history if "reward" in row]
    lengths = [row["completions/mean_length"] for row in logs]
    return {"seconds": [b - a for a, b in itertools.pairwise(ends)],
            "rollouts": cfg.generation_batch_prompts * G * gen_steps,
            "tokens": round(statistics.mean(lengths) * cfg.generation_batch_prompts * G * gen_steps),
            "reward": statistics.mean(row["reward"] for row in logs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, nargs="+", default=[16, 2], choices=sorted(ARMS))
    parser.add_argument("--gen-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    add_record_flag(parser, "trl_step")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    params = load_params("params.yaml")
    torch.set_num_threads(params.runtime.threads or os.cpu_count() or 1)
    prompts = params.train.generation_batch_prompts * args.gen_steps
    train = pd.read_parquet("data/prepared/train.parquet").iloc[:prompts]
    validation = pd.read_parquet("data/prepared/validation.parquet")  # the unused in-training evaluation's
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
          f"threads; torch {torch.__version__}, trl {trl.__version__}; {params.train.generation_batch_prompts} "
          f"prompts x G per generation step, {params.train.rollouts_per_minibatch} rollouts per optimizer step, "
          f"{params.task.max_new_tokens} new tokens at most, {args.gen_steps} generation steps per run", flush=True)
    print("| G | trainer | repeat | s per generation step (each) | rollouts | response tokens | mean reward |")
    print("|---|---|---|---|---|---|---|")
    medians = {}
    for G in args.groups:
        runs = {"ours": [], "ours, full pass": [], "TRL": []}
        for repeat in range(args.repeats):
            for name in runs:
                r = (trl_run(params, ARMS[G], train, args.gen_steps) if name == "TRL"
                     else ours(params, ARMS[G], train, validation, args.gen_steps, skip_dead=name == "ours"))
                runs[name] += r["seconds"]
                print(f"| {G} | {name} | {repeat} | {', '.join(f'{s:.2f}' for s in r['seconds'])} | "
                      f"{r['rollouts']:,} | {r['tokens']:,} | {r['reward']:.3f} |", flush=True)
                if "phases" in r:
                    print(f"|   | {name}: seconds per phase over the run | | "
                          f"{', '.join(f'{p} {s:.1f}' for p, s in r['phases'].items())} | | | |", flush=True)
        medians[G] = {name: statistics.median(s) for name, s in runs.items()}
    print("\n| G | ours s per generation step (median) | ours, full pass | TRL | TRL / ours | TRL / ours, full pass |")
    print("|---|---|---|---|---|---|")
    for G, m in medians.items():
        print(f"| {G} | {m['ours']:.2f} | {m['ours, full pass']:.2f} | {m['TRL']:.2f} | {m['TRL'] / m['ours']:.2f} | "
              f"{m['TRL'] / m['ours, full pass']:.2f} |")


if __name__ == "__main__":
    main()
