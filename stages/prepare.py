"""prepare: the train and test problem tables.

Reads: params `prepare`. Writes: data/prepared/train.parquet, data/prepared/test.parquet (schema Problems).
Problems come from reasoning-gym's chain_sum generator, offline, fixed by prepare.seed; train and test share none.
"""

from __future__ import annotations

from pathlib import Path

from twogrpo.io import write_parquet
from twogrpo.run import start_stage
from twogrpo.schemas import Problems, validate
from twogrpo.tasks import generate_problems

OUT = Path("data/prepared")


def main() -> None:
    params = start_stage("prepare")
    train, test = generate_problems(params.prepare)
    overlap = set(train["problem"]) & set(test["problem"])
    if overlap:
        raise AssertionError(f"train and test share {len(overlap)} problems, e.g. {sorted(overlap)[:3]}")
    for name, table in (("train", train), ("test", test)):
        path = OUT / f"{name}.parquet"
        write_parquet(validate(table, Problems, path), path)


if __name__ == "__main__":
    main()
