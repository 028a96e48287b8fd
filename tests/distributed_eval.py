"""Evaluation records of a tiny model, in one process or, under `accelerate launch`, shared out over several; the
first process saves the gathered records to argv[1]. Run by tests/test_distributed.py."""

import sys

from tests.fixtures import BASE, chain_sums
from twogrpo.distributed import Dist
from twogrpo.engine import HFEngine
from twogrpo.evaluation import sample_records
from twogrpo.policy import build_char_tokenizer, build_tiny_model
from twogrpo.sampling import Sampling
from twogrpo.tasks import generate_problems


def main(out: str) -> None:
    dist = Dist.from_environment()
    _, _, test = generate_problems(chain_sums(0, 8, 22, max_terms=3, max_digits=2))
    tokenizer = build_char_tokenizer()
    # 3 problems x 4 samples per chunk: 22 problems make 8 chunks, the last one short.
    engine = HFEngine(build_tiny_model(BASE, tokenizer), tokenizer, batch_sequences=12)
    records = sample_records(engine, test, "{problem}", Sampling(1.0, 1.0, 0, 8, n=4), seed=5, dist=dist)
    if dist.is_main:
        records.to_parquet(out)
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1])
