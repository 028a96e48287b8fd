"""Where `make test`'s CPU goes: the suite run in a fresh clone, every Python process it starts counted by what it ran.

    python bench/suite_cpu.py                  # clones HEAD into a temporary folder, runs make test there
    python bench/suite_cpu.py --keep /tmp/s    # keep the clone there (and the per-process log, suite_cpu.jsonl)
    python bench/suite_cpu.py --record         # also write the table into docs/figures.md (bench/figures.py)

The clone uses this checkout's installed environments (.venv, .venv-vllm: linked, not installed again). A
`sitecustomize` module on PYTHONPATH makes every Python process append, as it exits, its command line and the CPU
time it used itself (user + system, not its children's). Not counted: processes that end without running Python's
exit handlers (killed, as the resume tests' runs are, or ended by os._exit, as forked multiprocessing children are),
those started with a PYTHONPATH of their own, and programs that are not Python (git, the browser). The suite's whole
CPU, from the kernel's count for make and its children, is printed beside the sum.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from figures import add_record_flag, recording

ROOT = Path(__file__).resolve().parents[1]
LOG = "SUITE_CPU_LOG"
# Written into its own folder, put first on PYTHONPATH: Python imports `sitecustomize` at every start.
HOOK = f'''import atexit, json, os, resource, sys


def _record():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["{LOG}"], "a") as log:
        log.write(json.dumps({{"argv": sys.argv[:3], "cpu": usage.ru_utime + usage.ru_stime}}) + "\\n")


if os.environ.get("{LOG}"):
    atexit.register(_record)
'''


def hooked_env(folder: Path, log: Path) -> dict[str, str]:
    """This environment with the exit hook in `folder` first on PYTHONPATH, recording into `log`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HOOK)
    return os.environ | {LOG: str(log), "PYTHONPATH": os.pathsep.join(filter(None, [str(folder),
                                                                                 os.environ.get("PYTHONPATH")]))}


def kind(argv: list[str]) -> str:
    """What a process ran: `dvc <command>`, a script or module as its folder/file (`python -m stages.train` has
    .../stages/train.py as its argv[0]), or `-c` (inline code, as pytest-xdist's workers run)."""
    if not argv or not argv[0]:
        return "?"
    path = Path(argv[0])
    if path.name == "dvc" or path.parent.name == "dvc" and path.name == "__main__.py":
        return f"dvc {argv[1] if len(argv) > 1 else ''}".strip()
    return argv[0] if argv[0] == "-c" else f"{path.parent.name}/{path.name}"


def run_suite(project: Path, log: Path) -> tuple[float, float, int]:
    """make test in a clone at `project`: its wall-clock seconds, its and its children's CPU seconds, its exit code."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    for venv in (".venv", ".venv-vllm"):
        (project / venv).symlink_to(ROOT / venv)
    env = hooked_env(project.parent / "suite_cpu_hook", log)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(["make", "-o", ".venv/.installed", "-o", ".venv-vllm/.installed", "test"], cwd=project,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (project / "suite_cpu.log").write_text(done.stdout)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    parser.add_argument("--top", type=int, default=20, help="rows of the table (the rest summed in one)")
    add_record_flag(parser, "suite_cpu")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = args.keep or Path(tmp) / "suite"
        log = project.parent / "suite_cpu.jsonl"
        wall, cpu, code = run_suite(project, log)
        records = [json.loads(line) for line in log.read_text().splitlines()]
        if code:
            raise SystemExit(f"make test failed (exit {code}; its output: {project / 'suite_cpu.log'})")
    by_kind: dict[str, list[float]] = defaultdict(list)
    for record in records:
        by_kind[kind(record["argv"])].append(record["cpu"])
    ranked = sorted(by_kind.items(), key=lambda item: -sum(item[1]))
    counted = sum(sum(v) for v in by_kind.values())
    print(f"make test: {wall / 60:.1f} min wall-clock; {cpu:,.0f} s CPU for make and its children (the kernel's "
          f"count; processes that outlive their parent, as the DVC queue worker does, are not in it); "
          f"{len(records)} Python processes counted, {counted:,.0f} s CPU")
    print("\n| process | processes | CPU s | CPU s each (mean) | share of the counted CPU |")
    print("|---|---|---|---|---|")
    for name, cpus in ranked[: args.top]:
        print(f"| `{name}` | {len(cpus)} | {sum(cpus):,.0f} | {sum(cpus) / len(cpus):.1f} | "
              f"{sum(cpus) / counted:.0%} |")
    rest = [c for _, cpus in ranked[args.top:] for c in cpus]
    if rest:
        print(f"| the other {len(ranked) - args.top} kinds | {len(rest)} | {sum(rest):,.0f} | "
              f"{sum(rest) / len(rest):.1f} | {sum(rest) / counted:.0%} |")


if __name__ == "__main__":
    main()
