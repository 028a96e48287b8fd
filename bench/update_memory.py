"""Peak memory of the update with Qwen2.5's vocabulary on the CPU: log-probs chunked over the vocabulary (the trainer)
against every position's full-vocabulary logits at once (as before chunking), and against the planner.

    python bench/update_memory.py                  # 8 rollouts x 256, 512 and 1,024 tokens, hidden size 64
    python bench/update_memory.py --no-full        # skip the full-logits runs (19 GiB at 1,024 tokens)
    python bench/update_memory.py --record         # also write the table into docs/figures.md (bench/figures.py)

Each measurement is its own process (tests/memory_probe.py: two optimizer steps over 8 rollouts of 64 prompt tokens,
peak resident memory above its imports). Prints a markdown table with the machine, date and commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from figures import add_record_flag, recording

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def probe(*args: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "tests.memory_probe", *args], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-full", action="store_true", help="skip the full-logits runs")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024], help="tokens per rollout (> 64)")
    add_record_flag(parser, "update_memory")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# {datetime.date.today()}, commit {commit}, {platform.machine()} {os.cpu_count()} cores, "
          f"vocabulary 151,936, hidden size {args.hidden}, 2 layers, 8 rollouts")
    print("| tokens per rollout | chunked, GiB | full logits, GiB | full / chunked | planner, GiB | planner / "
          "measured |\n|---|---|---|---|---|---|")
    for tokens in args.lengths:
        shape = ["--hidden", str(args.hidden), "--response-tokens", str(tokens - 64)]
        chunked = probe(*shape)
        measured, estimate = chunked["measured"], chunked["estimate"]
        full = None if args.no_full else probe(*shape, "--full-logits")["measured"]
        versus = "- | -" if full is None else f"{full / GIB:.2f} | {full / measured:.1f}x"
        print(f"| {tokens:,} | {measured / GIB:.2f} | {versus} | {estimate / GIB:.2f} | {estimate / measured:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
