"""The whole study from clean: wall-clock of `dvc repro --force` in a fresh clone, per stage, with each stage's peak
memory, and the 2-GRPO / 16-GRPO training-time ratio it measured.

    python bench/study_timing.py                 # clones HEAD into a temporary folder, runs dvc repro -f there
    python bench/study_timing.py --keep /tmp/s   # keep the clone there (and its outputs)
    python bench/study_timing.py --record        # also write the table into docs/figures.md (bench/figures.py)

Uses this environment's tools (dvc, python) and the committed params (the embedded default unless HEAD says other).
Every stage logs its own seconds (process start to exit) and peak resident memory (twogrpo.run); the table adds
DVC's own time (hashing, caching, the lock file) as the rest of the wall-clock. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
from figures import add_record_flag, recording

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^Running stage '([^']+)'")
RESOURCES = re.compile(r" INFO resources: ([\d.]+) s, peak memory (\d+) MiB(?:, peak GPU memory (\d+) MiB)? \(rank")


def run_study(project: Path) -> tuple[float, str]:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    # One stream, so that each stage's lines follow DVC's "Running stage" line.
    # --force: a stage whose committed metrics match its (deterministic) inputs would otherwise be skipped.
    done = subprocess.run(["dvc", "repro", "--force"], cwd=project, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    log = done.stdout
    (project / "study_timing.log").write_text(log)
    if done.returncode:
        raise SystemExit(f"dvc repro failed (log: {project / 'study_timing.log'}):\n{log[-3000:]}")
    return seconds, log


def per_stage(log: str) -> pd.DataFrame:
    """Seconds and peak memory of each stage, from its resources line (the largest over its processes)."""
    stages: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "peak_mib": 0, "gpu_mib": 0})
    current = None
    for line in log.splitlines():
        if match := STAGE.match(line):
            current = match.group(1)
        elif (match := RESOURCES.search(line)) and current:
            row = stages[current]
            row["seconds"] = max(row["seconds"], float(match.group(1)))
            row["peak_mib"] = max(row["peak_mib"], int(match.group(2)))
            row["gpu_mib"] = max(row["gpu_mib"], int(match.group(3) or 0))
    return pd.DataFrame.from_dict(stages, orient="index")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    add_record_flag(parser, "study_timing")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = args.keep or Path(tmp) / "study"
        wall, log = run_study(project)
        table = per_stage(log)
        claims = json.loads((project / "metrics/claims.json").read_text())
        summary = pd.read_csv(project / "results/summary.csv")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"# dvc repro from clean of {commit.stdout.strip()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print("| stage | seconds | peak memory MiB |" + (" peak GPU MiB |" if table["gpu_mib"].any() else ""))
    print("|---|---|---|" + ("---|" if table["gpu_mib"].any() else ""))
    for name, row in table.iterrows():
        gpu = f" {row['gpu_mib']:.0f} |" if table["gpu_mib"].any() else ""
        print(f"| {name} | {row['seconds']:.1f} | {row['peak_mib']:.0f} |{gpu}")
    groups = table.groupby(table.index.str.split("@").str[0], sort=False)["seconds"].sum()
    print("\nper stage kind: " + ", ".join(f"{kind} {s:.0f} s" for kind, s in groups.items()))
    print(f"stages {table['seconds'].sum():.0f} s; DVC and the rest {wall - table['seconds'].sum():.0f} s; "
          f"wall-clock {wall:.0f} s ({wall / 60:.1f} min)")
    for arm, rows in summary[summary["arm"] != "base"].groupby("arm", sort=False):
        print(f"training seconds {arm}: " + ", ".join(f"{s:.1f}" for s in rows["train_time"]))
    for arm, claim in claims["arms"].items():
        print(f"training-time ratio {arm} / {claims['reference_arm']}: {claim['time_ratio']:.3f} (per seed: "
              + ", ".join(f"{r:.3f}" for r in claim["time_ratio_per_seed"]) + ")")


if __name__ == "__main__":
    main()
