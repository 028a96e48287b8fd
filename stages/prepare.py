"""prepare: the train problems and the benchmark problems, in one schema.

Reads: params `prepare`; for the paper's data, the hub (prepare.sources) or local files (prepare.local_root).
Writes: data/prepared/train.parquet, data/prepared/validation.parquet and data/prepared/test.parquet (schema
Problems; test holds every benchmark, told apart by `dataset`), data/prepared/sources.json (per dataset: where it came
from, the revision or content hash read, rows, repairs, rejections, and the train problems dropped because a
benchmark holds them).
The embedded default generates chain sums (reasoning-gym, fixed by prepare.seed); train, validation and test share
none. The paper's setups validate on the benchmarks, as verl did (its trainer evaluates on the val files, the
benchmarks, during training): their validation.parquet is the test set.
A benchmark row that cannot be repaired safely stops the stage, every such row listed by dataset and id; such a train
row is dropped and listed in sources.json (MATH train has two, whose solutions box nothing).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from pathlib import Path

import pandas as pd

from twogrpo.config import PrepareConfig, SourceConfig
from twogrpo.hub import hub_commit
from twogrpo.io import atomic_path, write_json, write_parquet
from twogrpo.mathdata import BenchmarkDataError, dedupe, drop_overlaps, load_rows, normalise, sample
from twogrpo.plan import stop_unless_this_machine_fits
from twogrpo.run import start_stage
from twogrpo.schemas import Problems, validate
from twogrpo.tasks import generate_problems

OUT = Path("data/prepared")
log = logging.getLogger("prepare")


def read_real(name: str, cfg: PrepareConfig, benchmark: bool) -> tuple[pd.DataFrame, dict]:
    """One real dataset as a Problems table, and its record for sources.json. A benchmark row that cannot be used
    stops the stage (a smaller benchmark would change what is measured); a train row is dropped and recorded."""
    source = cfg.sources[name]
    rows, ids = load_rows(name, source, cfg.local_root)
    loaded = normalise(name, rows, ids)
    if loaded.rejected and benchmark:
        raise BenchmarkDataError(f"{name}: {len(loaded.rejected)} rows cannot be used:\n  "
                                 + "\n  ".join(loaded.rejected))
    return loaded.table, {"read_from": _origin(source, cfg.local_root), "rows": len(rows),
                          "problems": len(loaded.table), "repairs": loaded.repairs, "rejected": loaded.rejected}


def _where(source: SourceConfig, local_root: str) -> str:
    return str(Path(local_root) / source.local) if local_root else f"the hub's {source.hub}"


def _origin(source: SourceConfig, local_root: str) -> dict:
    """Where a dataset was read from: the local path and a hash of its bytes, or the hub id and the commit read."""
    if local_root:
        path = Path(local_root) / source.local
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.read_bytes())
        return {"path": str(path), "files": len(files), "sha256": digest.hexdigest()}
    return {"hub": source.hub, "config": source.config, "split": source.split, "revision": source.revision,
            "commit": hub_commit(source.hub, source.revision, "dataset")}


def prepare(cfg: PrepareConfig) -> tuple[dict[str, pd.DataFrame], dict]:
    """{"train", "validation", "test"} tables and the record of their sources."""
    if cfg.train_set == "chain_sum":
        train, validation, test = generate_problems(cfg)
        for (a, x), (b, y) in itertools.combinations((("train", train), ("validation", validation), ("test", test)), 2):
            overlap = set(x["problem"]) & set(y["problem"])
            if overlap:
                raise AssertionError(f"{a} and {b} share {len(overlap)} problems, e.g. {sorted(overlap)[:3]}")
        return ({"train": train, "validation": validation, "test": test},
                {"chain_sum": {"generated": "reasoning_gym chain_sum", "seed": cfg.seed}})
    record: dict = {}
    tables = []
    for name in cfg.benchmarks:
        table, record[name] = read_real(name, cfg, benchmark=True)
        tables.append(table)
    test = pd.concat(tables, ignore_index=True)
    train, record[cfg.train_set] = read_real(cfg.train_set, cfg, benchmark=False)
    if train.empty:
        rejected = record[cfg.train_set]["rejected"]
        raise BenchmarkDataError(f"{cfg.train_set}: 0 problems kept of {record[cfg.train_set]['rows']} rows read from "
                                 f"{_where(cfg.sources[cfg.train_set], cfg.local_root)}"
                                 + (f"; the first rejections: {'; '.join(rejected[:3])}" if rejected else ""))
    unique = dedupe(train)
    train, overlaps = drop_overlaps(unique, test)
    for line in overlaps:
        log.warning("dropped from the train set: %s", line)
    train = sample(train, cfg.train_size, cfg.seed)
    record[cfg.train_set] |= {"duplicates_dropped": record[cfg.train_set]["problems"] - len(unique),
                              "benchmark_overlaps_dropped": overlaps, "sampled": len(train)}
    log.info("train set %s: %d problems; benchmarks: %s", cfg.train_set, len(train),
             ", ".join(f"{n} {record[n]['problems']}" for n in cfg.benchmarks))
    return {"train": train, "validation": test, "test": test}, record


def main() -> None:
    params = start_stage("prepare")
    stop_unless_this_machine_fits(params, "prepare")  # before the data and the weights are downloaded
    tables, record = prepare(params.prepare)
    tables = {name: validate(table, Problems, OUT / f"{name}.parquet") for name, table in tables.items()}
    with atomic_path(OUT) as tmp:  # the folder whole, or the previous one
        for name, table in tables.items():
            write_parquet(table, tmp / f"{name}.parquet")
        write_json(record, tmp / "sources.json")


if __name__ == "__main__":
    main()
