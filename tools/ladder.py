"""The ladder: does 2-GRPO's gap to 16-GRPO close with model size, with training length, or under another
learning-rate rule? One DVC experiment per point, one report over them.

    python -m tools.ladder                 # queue the points not yet run, run them, write reports/ladder.html
    python -m tools.ladder --report        # only the report, from the ladder experiments already run
    python -m tools.ladder --points center size-10m     # some points only
    python -m tools.ladder --set scale=dry-run --set base.max_steps=20   # added to every point (a smoke check)

The points are configuration: one file per point in conf/ladder/ (a Hydra config group), each a change to the center
(conf/ladder/center.yaml). Each point is an ordinary DVC experiment, `ladder-<point>` (`dvc exp show` lists it,
`dvc exp apply` restores it), queued as `dvc exp run --queue -S ladder=<point>` and run by one queue worker, one
point at a time (every stage already uses all the cores). The points change one factor at a time, so a point shares
every stage it does not change with the others through DVC's run cache. A point whose experiment exists on this
commit is not run again, so a ladder stopped midway continues where it stopped (`dvc exp remove` a point to rerun it).
DVC is asked through its Python API (dvc.repo.Repo: the experiments, the queue's status); `dvc queue start` runs as a
command only so that the worker it leaves behind holds none of this process's output.

The report reads the newest `ladder-<point>` experiment of each point, on whichever commit it ran (the report names
each point's commit): its params, metrics and result tables (committed in the experiment), into reports/ladder.json,
and executes notebooks/ladder.ipynb on it into reports/ladder.html. A point recorded in reports/ladder.json whose
experiment this repository no longer holds (run in another clone) keeps its recorded entry. Either counts only while
the point's file (with the `--set` values of the call) still describes it.
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
from dvc.lock import LockError
from dvc.repo import Repo
from hydra.errors import HydraException

from tools.experiments import git_file
from tools.setups import compose
from twogrpo.config import ParamsError
from twogrpo.io import atomic_path
from twogrpo.ladder import GRID_PREFIX
from twogrpo.notebooks import execute_to_html

REPORTS = Path("reports")
POLL_SECONDS = 15
MAX_RESTARTS = 3  # starts of a stopped DVC queue worker before the ladder gives up
PREFIX = "ladder-"
LADDER_CONF = Path(__file__).resolve().parents[1] / "conf" / "ladder"
CENTER = "center"
# Each axis and the points along it (the report draws and judges each; the learning-rate rule varies by arm within
# every point). A point on no axis is shown, not judged.
AXES = {"model size": ["center", "size-10m"],
        "training length": ["epochs-2-prompts-256", "epochs-4-prompts-256", "epochs-10-prompts-256"],
        "prompt pool": ["epochs-10-prompts-128", "epochs-10-prompts-256"]}
CURVE_COLUMNS = ("arm", "seed", "gen_step", "rollouts", "train_time", "eval_accuracy", "dead_group_frac", "update_size",
                 "update_cosine", "eval_kl")
FILES = ("metrics/claims.json", "metrics/base.json", "results/summary.csv", "results/curves.csv",
         "results/time_to_target.csv")


def ladder_points() -> list[str]:
    """The ladder's points: conf/ladder/'s files, the center first."""
    return sorted((p.stem for p in LADDER_CONF.glob("*.yaml")), key=lambda name: (name != CENTER, name))


def settings(point: str) -> dict[str, object]:
    """The settings a point's file states, with those of the points it builds on (its defaults list names them), as
    dotted keys (the center's: the whole center)."""
    conf = yaml.safe_load((LADDER_CONF / f"{point}.yaml").read_text())
    inherited = {}
    for entry in conf.pop("defaults", []):
        if isinstance(entry, str) and entry != "_self_":  # another point (a group override is a mapping)
            inherited |= settings(entry)

    def flat(mapping: dict, where: str = "") -> dict[str, object]:
        out = {}
        for key, value in mapping.items():
            out |= flat(value, f"{where}{key}.") if isinstance(value, dict) else {f"{where}{key}": value}
        return out

    return inherited | flat(conf)


def changes(point: str) -> dict[str, object]:
    """What a point changes from the center (the center: nothing)."""
    center = settings(CENTER)
    return {key: value for key, value in settings(point).items() if key not in center or center[key] != value}


def overrides(point: str, extra: list[str]) -> list[str]:
    """A point's `dvc exp run -S` values: the point's choice, then `extra` (which a point's own settings do not
    override: command-line overrides come last in Hydra's composition)."""
    return [f"ladder={point}", *extra]


def experiments(any_commit: bool = False) -> dict[str, dict]:
    """The ladder's experiments on this commit (or on any, with `any_commit`): point -> {rev, baseline, finished
    (unix time of its commit)}, the newest of each name."""
    known, found = set(ladder_points()), {}
    with Repo(".") as repo:
        listed = repo.experiments.ls(all_commits=any_commit)
        for baseline, exps in listed.items():
            for name, rev in exps:
                point = name[len(PREFIX):]
                if not name.startswith(PREFIX) or point not in known or rev is None:
                    continue
                finished = repo.scm.resolve_commit(rev).commit_time
                if point not in found or finished >= found[point]["finished"]:
                    found[point] = {"rev": rev, "baseline": baseline, "finished": finished}
    return found


def pending(names: set[str]) -> tuple[set[str], bool] | None:
    """Of these experiment names, those the DVC queue holds queued or running, and whether one of them runs or a queue
    worker is active; None when DVC cannot be asked now (its lock held). A worker busy with an experiment can miss
    the status query (seen between two points: `Worker status: 0 active` beside a point `Running`), so a running
    point counts as work."""
    try:
        with Repo(".") as repo:
            queue = repo.experiments.celery_queue
            ours = [e for e in queue.status() if e["name"] in names and e["status"] in ("Queued", "Running")]
            running = any(e["status"] == "Running" for e in ours)
            return {e["name"] for e in ours}, running or bool(queue.worker_status())
    except LockError:
        return None


def outdated(point: str, params: dict, extra: list[str] = ()) -> dict[str, tuple[object, object]]:
    """The settings a point's file states (with those it builds on), as `extra` overrides (`--set` values) leave
    them, that a run's params do not hold: key -> (the point's value, the run's). Empty when the run is the point as
    it is defined now."""
    stated = settings(point)
    for override in extra:
        key, _, value = override.partition("=")
        if key in stated:
            stated[key] = yaml.safe_load(value)
    found = {}
    for key, value in stated.items():
        section, name = key.split(".")
        ran = params.get(section, {}).get(name)
        if ran != value:
            found[key] = (value, ran)
    return found


def point_record(point: str, rev: str) -> dict:
    """A point's params, metrics and result tables as committed in its experiment."""
    record = {"point": point, "rev": rev, "changes": changes(point),
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
                rows = [{c: row.get(c) for c in CURVE_COLUMNS} for row in rows]  # older runs lack some
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
    ours = {PREFIX + p for p in todo}
    asked = pending({PREFIX + p for p in ladder_points()})
    if asked is None or asked[0]:
        raise SystemExit("the DVC queue already holds ladder experiments (or DVC is busy): see `dvc queue status`, "
                         "run `dvc queue remove --queued` (or wait for them), then this again")
    with Repo(".") as repo:
        for point in todo:
            settings = overrides(point, extra)
            repo.experiments.run(queue=True, name=PREFIX + point, params=settings)
            print(f"queued {PREFIX}{point}: {' '.join(settings)}", flush=True)
    start = time.time()
    print(f"running {len(todo)} points one at a time (dvc queue start --jobs 1; follow one with `dvc queue logs -f "
          f"{PREFIX}<point>`)", flush=True)
    start_worker()
    wait_for(ours, start)
    # Those that ended since the start, on whichever commit they were queued (a commit made meanwhile moves HEAD).
    finished = {p: e for p, e in experiments(any_commit=True).items() if e["finished"] >= int(start)}
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


def wait_for(names: set[str], start: float) -> None:
    """Until none of these experiments is queued or running (one removed from the queue counts as ended), saying when
    each ends; a DVC queue worker that stops with some of them queued is started again, up to MAX_RESTARTS times."""
    waiting, idle, restarts = names, 0, 0
    while waiting:
        time.sleep(POLL_SECONDS)
        asked = pending(waiting)
        if asked is None:  # DVC busy or locked: ask again
            continue
        still, working = asked
        for name in sorted(waiting - still):
            print(f"{name} ended after {(time.time() - start) / 60:.1f} min", flush=True)
        waiting = still
        idle = idle + 1 if waiting and not working else 0
        if idle >= 4 and restarts < MAX_RESTARTS:
            # A minute with ours queued, none running and no worker. DVC's worker can stop with experiments still
            # queued (treeverse/dvc#10562; its log says "Got shutdown from remote"); a new one resumes them.
            print(f"the DVC queue worker stopped while {', '.join(sorted(waiting))} wait; starting it again",
                  flush=True)
            start_worker()
            idle, restarts = 0, restarts + 1
        elif idle >= 4:
            raise SystemExit(f"no DVC queue worker is running, yet {', '.join(sorted(waiting))} wait, after "
                             f"{restarts} restarts: `dvc queue status`, `dvc queue logs <name>`")


def start_worker() -> None:
    """`dvc queue start --jobs 1`: one experiment at a time, as every stage already uses all the cores."""
    # Its output goes to a file, not a pipe: the worker it starts inherits the descriptors and would hold a pipe open
    # until the queue is empty.
    with tempfile.TemporaryFile("w+") as said:
        started = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "--jobs", "1"], stdout=said,
                                 stderr=subprocess.STDOUT)
        if started.returncode:
            said.seek(0)
            raise SystemExit(f"dvc queue start failed:\n{said.read()}")


def write_report(seconds: dict[str, float], extra: list[str] = ()) -> Path:
    """reports/ladder.json from the ladder's experiments (the cost measured now, or kept from the last run), then
    reports/ladder.html. A point's runs count while they hold its settings as `extra` (the `--set` values the points
    just ran with) leaves them."""
    found = experiments(any_commit=True)
    if not found:
        raise SystemExit("no ladder experiment in this repository: run `python -m tools.ladder` first")
    path = REPORTS / "ladder.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    # A cost measured before stays with its experiment: a point run again, but not timed now, has none.
    recorded = previous.get("points", {})
    cost = {p: s for p, s in previous.get("seconds", {}).items()
            if p not in found or recorded.get(p, {}).get("rev") == found[p]["rev"]} | seconds
    # A point recorded before whose experiment this repository no longer holds keeps its record (it is the evidence).
    # Either is dropped once the point has been redefined: a run of other settings would sit on the axis under its
    # name, and the rule would read it as the point.
    known, points = ladder_points(), {}
    for point, record in recorded.items():
        if point in known and point not in found:
            points[point] = record
    points |= {p: point_record(p, e["rev"]) | {"baseline": e["baseline"]} for p, e in found.items()}
    for point, record in list(points.items()):
        if point in known and (stale := outdated(point, record["params"], extra)):
            print(f"{PREFIX}{point}: its recorded run ({record['rev'][:7]}) does not hold the point's settings ("
                  + ", ".join(f"{k} {v!r}, ran {r!r}" for k, (v, r) in stale.items()) + "); dropped")
            del points[point]
    points = {p: points[p] for p in known if p in points}  # in conf/ladder/'s order, whichever ran where
    grid = [p for p in known if p.startswith(GRID_PREFIX)]
    ladder = {"axes": AXES, "grid": grid, "points": points, "seconds": {p: s for p, s in cost.items() if p in points}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(ladder, indent=1))
    execute_to_html(Path("notebooks/ladder.ipynb"), REPORTS / "ladder.ipynb", REPORTS / "ladder.html",
                    {"ladder_json": str(path)})
    return REPORTS / "ladder.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", nargs="+", choices=ladder_points(), default=ladder_points())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further `dvc exp run -S` override for every point")
    parser.add_argument("--report", action="store_true", help="only write the report")
    args = parser.parse_args(argv)
    seconds, failed = ({}, []) if args.report else run_points(args.points, args.set)
    if failed:  # named before the report, which stops when no point ran at all
        print("failed (see `dvc queue logs <name>`; the report shows the points that ran): "
              + ", ".join(PREFIX + p for p in failed), file=sys.stderr, flush=True)
    print(f"wrote {write_report(seconds, args.set)}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
