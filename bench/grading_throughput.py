"""Grading throughput: graded (gold, completion) pairs per second, in 1 and 2 worker processes; and the check that the
math-verify grader (last box, fast path, cache) decides as math-verify on the whole text of every pair with at most
one box.

    python bench/grading_throughput.py
    python bench/grading_throughput.py --processes 1 2 4 --grader verl-math --math500 <MATH-500 test.jsonl>
    python bench/grading_throughput.py --record    # also write the table into docs/figures.md (bench/figures.py)

Two sets of pairs:
- embedded: every sample of eval/*/samples.parquet of this checkout's study (`dvc repro` first), graded against
  its problem's answer: short arithmetic completions, many repeated (the grader caches per pair, as in the study);
- MATH-500 solutions: each reference solution of MATH-500 (LaTeX prose ending in \\boxed{...}) graded against its
  answer, every pair distinct: the paper's kind of output, no cache hits (default: the 100 of tests/data; pass the
  whole file with --math500). Every solution's box is its gold's text, the grader's fast path;
- MATH-500 solutions, wrong gold: each solution graded against the next problem's answer: wrong, no fast path,
  math-verify parses both.
Each run starts fresh worker processes (a cold cache; math-verify's time limits need each grader in the main thread
of its process) and grades the pairs in chunks; the seconds cover the grading only, not the workers' start-up.
Prints a markdown table: pairs, samples/s per process count, and the speed-up over one process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import pandas as pd
from figures import add_record_flag, recording
from math_verify import parse, verify

from twogrpo.grading import GRADERS, gold_grades_itself, grade

CHUNK = 64
GRADER = "math-verify"


def embedded_pairs() -> list[tuple[str, str]]:
    answers = pd.read_parquet("data/prepared/test.parquet").set_index("id")["answer"]
    samples = pd.concat([pd.read_parquet(p) for p in sorted(Path("eval").glob("*/samples.parquet"))])
    return list(zip(answers.loc[samples["problem_id"]].tolist(), samples["completion"].tolist(), strict=True))


def math500_pairs(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["answer"], row["solution"]) for row in rows]


def grade_chunk(pairs: list[tuple[str, str]]) -> int:
    return sum(grade(gold, completion, GRADER).correct for gold, completion in pairs)


def whole_text_disagreements(pairs: list[tuple[str, str]]) -> tuple[int, int]:
    """(pairs checked, pairs where the grader and math-verify on the whole completion disagree): every pair with at
    most one box whose gold grades itself (the fast path's precondition, checked by the prepare stage)."""
    checked = differ = 0
    for gold, completion in set(pairs):
        if completion.count("\\boxed") + completion.count("\\fbox") <= 1 and gold_grades_itself(gold):
            checked += 1
            differ += grade(gold, completion).correct != bool(verify(parse(f"\\boxed{{{gold}}}"), parse(completion)))
    return checked, differ


def warm(_: int) -> None:
    time.sleep(0.2)  # makes every worker start before the clock starts


def throughput(pairs: list[tuple[str, str]], processes: int) -> tuple[float, int]:
    chunks = [pairs[i:i + CHUNK] for i in range(0, len(pairs), CHUNK)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(warm, range(processes))
        start = time.perf_counter()
        correct = sum(pool.map(grade_chunk, chunks, chunksize=1))
        return len(pairs) / (time.perf_counter() - start), correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--math500", type=Path, default=Path("tests/data/benchmarks/math500/test.jsonl"))
    parser.add_argument("--grader", choices=GRADERS, default=GRADER)
    add_record_flag(parser, "grading_throughput")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    global GRADER
    GRADER = args.grader  # the forked workers inherit it
    sets = {}
    if Path("eval").is_dir():
        sets["embedded study samples"] = embedded_pairs()
    if args.math500.exists():
        sets["MATH-500 solutions"] = math500_pairs(args.math500)
        golds, solutions = zip(*sets["MATH-500 solutions"], strict=True)
        sets["MATH-500 solutions, wrong gold"] = list(zip(golds[1:] + golds[:1], solutions, strict=True))
    if not sets:
        raise SystemExit("no pairs: run `dvc repro` (eval/*/samples.parquet) or pass --math500 <test.jsonl>")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; grader {GRADER}; "
          f"{CHUNK} pairs per task")
    print("| pairs | n | distinct | " + " | ".join(f"{p} proc samples/s" for p in args.processes)
          + " | speed-up | correct |")
    print("|---" * (5 + len(args.processes)) + "|")
    for name, pairs in sets.items():
        results = [throughput(pairs, p) for p in args.processes]
        corrects = {c for _, c in results}
        assert len(corrects) == 1, f"the process counts disagree on the grades: {corrects}"
        print(f"| {name} | {len(pairs):,} | {len(set(pairs)):,} | "
              + " | ".join(f"{rate:,.0f}" for rate, _ in results)
              + f" | {results[-1][0] / results[0][0]:.2f}x | {results[0][1]:,} |", flush=True)
    for name, pairs in sets.items():
        checked, differ = whole_text_disagreements(pairs)
        print(f"# {name}: the grader and whole-text math-verify disagree on {differ} of {checked:,} distinct pairs "
              f"with at most one box")


if __name__ == "__main__":
    main()
