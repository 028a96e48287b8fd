"""A short GRPO run and an evaluation with a vLLM engine in every process under `accelerate launch`; the first
process saves the ledger and the records to argv[2]. Run by tests/test_vllm.py (in .venv-vllm) on the policy folder
argv[1]."""

import sys

import torch

from tests.fixtures import EVAL, TRAIN, chain_sums
from twogrpo.config import ArmConfig, RolloutConfig, TaskConfig
from twogrpo.distributed import Dist
from twogrpo.engine import make_engine
from twogrpo.evaluation import sample_records
from twogrpo.policy import load_policy
from twogrpo.sampling import Sampling
from twogrpo.tasks import generate_problems
from twogrpo.trainer import Policy, TrainData, TrainRun, train_grpo


def main(policy_dir: str, out: str) -> None:
    dist = Dist.from_environment()
    run(dist, policy_dir, out)
    dist.close()  # after run() has released the model (Dist.close)


def run(dist: Dist, policy_dir: str, out: str) -> None:
    model, tokenizer = load_policy(policy_dir)
    engine = make_engine(RolloutConfig("vllm", "float32", 0.2), model, tokenizer, policy_dir, seed=0)
    train, _, test = generate_problems(chain_sums(0, 64, 16, max_terms=2, max_digits=1))
    task = TaskConfig(prompt_template="{problem}", max_new_tokens=12)
    ledger = train_grpo(TrainRun(task, TRAIN, ArmConfig(4, "linear"), EVAL, seed=0), Policy(model, tokenizer, engine),
                        TrainData(train, test), dist=dist)
    records = sample_records(engine, test, "{problem}", Sampling(0.7, 0.8, 20, 12, n=2), seed=0, dist=dist)
    if dist.is_main:
        torch.save({"ledger": ledger, "records": records}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
