"""The ladder: does 2-GRPO's gap to 16-GRPO close with model size, with training length, or under another
learning-rate rule? One DVC experiment per point, one report over them.

    python -m tools.ladder                 # queue the points not yet run, run them, write reports/ladder.html
    python -m tools.ladder --report        # only the report, from the ladder experiments already run
    python -m tools.ladder --points center epochs-4     # some points only
    python -m tools.ladder --set scale=dry-run --set base.max_steps=20   # added to every point (a smoke check)

Each point is an ordinary DVC experiment, `ladder-<point>` (`dvc exp show` lists it, `dvc exp apply` restores it),
queued with `dvc exp run --queue -S arms=ladder -S <the point's changes>` and run with `dvc queue start`, one
at a time (every stage already uses all the cores). The points change one factor at a time around a center (the
embedded default's settings before the ladder chose 10 epochs), so a point shares every stage it does not change
with the others through DVC's run cache. A point whose experiment exists on this commit is not run again, so a
ladder stopped midway continues where it stopped (`dvc exp remove` a point to rerun it).

The report reads the newest `ladder-<point>` experiment of each point, on whichever commit it ran (the report names
each point's commit): its params, metrics and result tables (committed in
the experiment), into reports/ladder.json, and executes notebooks/ladder.ipynb on it into reports/ladder.html.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hydra.errors import HydraException

from tools.experiments import git_file
from tools.setups import compose
from twogrpo.config import ParamsError
from twogrpo.io import atomic_path
from twogrpo.notebooks import execute_to_html

REPORTS = Path("reports")
POLL_SECONDS = 15
PREFIX = "ladder-"

# The point the axes leave from, stated in full so that the ladder keeps its meaning if the embedded default changes:
# the embedded default's model (0.6M parameters) trained 1 epoch over 1,024 prompts, 3 seeds (a verdict needs 3).
CENTER = {"base.hidden_size": "128", "base.num_heads": "4", "base.num_kv_heads": "2", "base.intermediate_size": "384",
          "base.lr": "3.0e-3",
          "train.prompts": "1024", "train.epochs": "1", "train.eval_every": "1", "train.seeds": "[0, 1, 2]"}
# Each point: the params it changes from the center (as `dvc exp run -S` overrides). Model sizes keep the
# center's 3 layers and head_dim 32 and scale width: ~0.6M (the center), ~2.4M and ~9.5M parameters. Each size
# trains its own SFT base to the same stopping accuracy (base.target_accuracy), at an SFT learning rate scaled as
# 1/width (the usual rule for Adam on hidden weights): at the center's 3e-3, the 2.4M model stopped at 3,000 steps
# with 0.11 sampled accuracy, below the band. Training length: 1 epoch (the
# center), 4, and the paper's 10 (v3 §5.1) over the same 1,024 prompts, with about one in-training measurement per
# epoch. Every point runs the center's 3 seeds: a point with fewer is shown, never judged (twogrpo.ladder).
POINTS: dict[str, dict[str, str]] = {
    "center": {},
    "epochs-4": {"train.epochs": "4", "train.eval_every": "2"},
    "epochs-10": {"train.epochs": "10", "train.eval_every": "8"},
    "size-2m": {"base.hidden_size": "256", "base.num_heads": "8", "base.num_kv_heads": "4",
                "base.intermediate_size": "768", "base.lr": "1.5e-3"},
    "size-10m": {"base.hidden_size": "512", "base.num_heads": "16", "base.num_kv_heads": "8",
                 "base.intermediate_size": "1536", "base.lr": "7.5e-4",
                 # The covariance stage keeps every rollout's gradient: 1,000 of 9.5M parameters need 38 GB.
                 "contrastive.prompts": "10"},
    # Off the axes, the candidate default: the paper's 10 epochs over 128 prompts, 1.25 times the center's rollouts.
    "epochs-10-prompts-128": {"train.epochs": "10", "train.prompts": "128"},
}
# Each axis and the points along it. The learning-rate rule varies by arm within every point.
AXES = {"model size": ["center", "size-2m", "size-10m"], "training length": ["center", "epochs-4", "epochs-10"]}
CURVE_COLUMNS = ("arm", "seed", "gen_step", "rollouts", "train_time", "eval_accuracy", "dead_group_frac")
FILES = ("metrics/claims.json", "metrics/base.json", "results/summary.csv", "results/curves.csv",
         "results/time_to_target.csv")


def dvc(*args: str) -> subprocess.CompletedProcess:
    """Run `dvc <args>` from this environment (no shell: every value is one argument)."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def overrides(point: str, extra: list[str]) -> list[str]:
    """A point's `dvc exp run -S` values: the ladder's arms, the center with the point's changes, then `extra`
    (applied last)."""
    return ["arms=ladder", *(f"{key}={value}" for key, value in (CENTER | POINTS[point]).items()), *extra]


def experiments(any_commit: bool = False) -> dict[str, dict]:
    """The ladder's experiments on this commit (or on any, with `any_commit`): point -> {rev, baseline, finished
    (unix time)}, the newest of each name. DVC keeps an experiment as the git ref
    refs/exps/<baseline commit split 2/38>/<name>."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    where = "refs/exps/" if any_commit else f"refs/exps/{head[:2]}/{head[2:]}/"
    listed = subprocess.run(["git", "for-each-ref", "--sort=committerdate",
                             "--format=%(refname) %(objectname) %(committerdate:unix)", where],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    found = {}
    for line in filter(None, listed):
        ref, rev, finished = line.split()
        *_, high, low, name = ref.split("/")
        if name.startswith(PREFIX) and name[len(PREFIX):] in POINTS:
            found[name[len(PREFIX):]] = {"rev": rev, "baseline": high + low, "finished": int(finished)}
    return found


def point_record(point: str, rev: str) -> dict:
    """A point's params, metrics and result tables as committed in its experiment."""
    record = {"point": point, "rev": rev, "changes": POINTS[point],
              "params": yaml.safe_load(git_file(rev, "params.yaml") or "{}")}
    for path in FILES:
        text = git_file(rev, path)
        key = Path(path).stem
        if text is None:
            record[key] = None
        elif path.endswith(".json"):
            record[key] = json.loads(text)
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
            if key == "curves":  # what the report draws, not every telemetry column
                rows = [{c: row[c] for c in CURVE_COLUMNS} for row in rows]
            record[key] = rows
    return record


def check_points(points: list[str], extra: list[str]) -> dict[str, dict]:
    """Compose every point's params as DVC will and validate them, before anything is queued: a bad --set value or
    key stops here, named, not in the queue. Returns point -> the params.yaml mapping it will run with."""
    composed = {}
    for point in points:
        try:
            composed[point] = compose(overrides(point, extra))[0]
        except (HydraException, ParamsError) as error:
            raise SystemExit(f"{PREFIX}{point}: {error}") from None
    return composed


def run_points(points: list[str], extra: list[str]) -> tuple[dict[str, float], list[str]]:
    """Queue and run the points not yet run on this commit: the wall-clock seconds of each point run now, and the
    points that failed."""
    composed = check_points(points, extra)
    done = experiments()
    todo = [p for p in points if p not in done]
    for point in points:
        if point in done:
            ran = yaml.safe_load(git_file(done[point]["rev"], "params.yaml") or "{}")
            if ran != composed[point]:  # e.g. a smoke run with other --set values
                raise SystemExit(f"{PREFIX}{point} on this commit ran with other params than these; `dvc exp remove "
                                 f"{PREFIX}{point}` to run it again")
            print(f"{PREFIX}{point}: already run on this commit ({done[point]['rev'][:7]}); not run again")
    if not todo:
        return {}, []
    queued = dvc("queue", "status")
    if any(PREFIX in line and ("Queued" in line or "Running" in line) for line in queued.stdout.splitlines()):
        raise SystemExit(f"the DVC queue already holds ladder experiments:\n{queued.stdout}\nrun `dvc queue remove "
                         "--queued` (or wait for them), then this again")
    for point in todo:
        settings = overrides(point, extra)
        result = dvc("exp", "run", "--queue", "-n", f"{PREFIX}{point}", *(a for s in settings for a in ("-S", s)))
        if result.returncode:
            raise SystemExit(f"queueing {PREFIX}{point} failed:\n{result.stdout}{result.stderr}")
        print(f"queued {PREFIX}{point}: {' '.join(settings)}", flush=True)
    start = time.time()
    print(f"running {len(todo)} points one at a time (dvc queue start --jobs 1; follow one with `dvc queue logs -f "
          f"{PREFIX}<point>`)", flush=True)
    # Its output goes to a file, not a pipe: the worker it starts inherits the descriptors and would hold a pipe open
    # until the queue is empty.
    with tempfile.TemporaryFile("w+") as said:
        started = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "--jobs", "1"], stdout=said,
                                 stderr=subprocess.STDOUT)
        if started.returncode:
            said.seek(0)
            raise SystemExit(f"dvc queue start failed:\n{said.read()}")
    waiting, idle = set(todo), 0
    while waiting:  # until none of ours is queued or running (a point removed from the queue counts as ended)
        time.sleep(POLL_SECONDS)
        status = dvc("queue", "status")
        if status.returncode:  # DVC busy or locked: ask again
            continue
        lines = status.stdout.splitlines()
        pending = {p for p in waiting if any(f" {PREFIX}{p} " in f" {line} " and ("Queued" in line or "Running" in line)
                                             for line in lines)}
        for point in sorted(waiting - pending):
            print(f"{PREFIX}{point} ended after {(time.time() - start) / 60:.1f} min", flush=True)
        waiting = pending
        idle = idle + 1 if waiting and any("Worker status: 0 active" in line for line in lines) else 0
        if idle >= 4:  # a minute with ours pending and no worker: it died
            raise SystemExit(f"no DVC queue worker is running, yet {', '.join(PREFIX + p for p in sorted(waiting))} "
                             "wait: `dvc queue status`, `dvc queue logs <name>`")
    finished = experiments()
    # A point's wall-clock: from the previous point's end (a failed point's time counts toward the next).
    seconds, previous = {}, start
    for point, entry in sorted(((p, e) for p, e in finished.items() if p in todo), key=lambda x: x[1]["finished"]):
        seconds[point] = entry["finished"] - previous
        previous = entry["finished"]
    failed = [p for p in todo if p not in finished]
    total = time.time() - start
    print(f"ladder: {len(seconds)} points in {total / 60:.1f} min wall-clock; "
          + ", ".join(f"{p} {s / 60:.1f} min" for p, s in seconds.items()), flush=True)
    return seconds, failed


def write_report(seconds: dict[str, float]) -> Path:
    """reports/ladder.json from the ladder's experiments (the cost measured now, or kept from the last run), then
    reports/ladder.html."""
    found = experiments(any_commit=True)
    if not found:
        raise SystemExit("no ladder experiment in this repository: run `python -m tools.ladder` first")
    path = REPORTS / "ladder.json"
    cost = json.loads(path.read_text()).get("seconds", {}) if path.exists() else {}
    cost |= seconds
    ladder = {"axes": AXES, "points": {p: point_record(p, e["rev"]) | {"baseline": e["baseline"]}
                                       for p, e in found.items()},
              "seconds": {p: s for p, s in cost.items() if p in found}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(ladder, indent=1))
    execute_to_html(Path("notebooks/ladder.ipynb"), REPORTS / "ladder.ipynb", REPORTS / "ladder.html",
                    {"ladder_json": str(path)})
    return REPORTS / "ladder.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", nargs="+", choices=list(POINTS), default=list(POINTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further `dvc exp run -S` override for every point")
    parser.add_argument("--report", action="store_true", help="only write the report")
    args = parser.parse_args(argv)
    seconds, failed = ({}, []) if args.report else run_points(args.points, args.set)
    if failed:  # named before the report, which stops when no point ran at all
        print("failed (see `dvc queue logs <name>`; the report shows the points that ran): "
              + ", ".join(PREFIX + p for p in failed), file=sys.stderr, flush=True)
    print(f"wrote {write_report(seconds)}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
