"""What every stage does first: logging, offline mode, thread count, the validated params, a check that params.yaml
has not changed under the DVC run, and a last log line with the stage's seconds and peak memory
(bench/study_timing.py reads it)."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from twogrpo.config import PARAMS_FILE, Params, load_params
from twogrpo.io import write_json
from twogrpo.launch import cores_per_process

# The params each DVC run started with, one file per run (<dvc pid>-<its start time>.json; not tracked).
RUN_RECORDS = Path(".dvc/tmp/twogrpo-runs")


def start_stage(name: str) -> Params:
    """Configure the process for a stage and return the params; the first line logged names the stage and the
    resolved params it read (params.yaml, with its digest). The hub's offline default is set by the `stages` package,
    before the hub libraries are imported."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop_if_params_changed_during_the_run(name)
    params = load_params()
    torch = sys.modules.get("torch")  # a stage that computes with torch has imported it; the others never load it
    if torch is not None:
        torch.set_num_threads(params.runtime.threads or cores_per_process())
    log = logging.getLogger(name)
    digest = hashlib.sha256(PARAMS_FILE.read_bytes()).hexdigest()[:12]
    log.info("stage %s: params %s (sha256 %s), validated", name, PARAMS_FILE.resolve(), digest)
    atexit.register(_fail_if_params_changed_while_it_ran, name)  # runs last: exit handlers run in reverse
    atexit.register(_log_resources, log)
    return params


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: [0] state, [1] parent pid, [19] start time in clock ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def dvc_run() -> list[int] | None:
    """The DVC process that started this stage, as [pid, start time] (a pid alone can be reused), found among this
    process's ancestors (DVC runs a stage through a shell; under `accelerate launch`, through its launcher too); None
    for a stage started by hand or where there is no /proc."""
    pid = os.getpid()
    try:
        while pid > 1:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]  # dvc, python dvc, python -m dvc
            fields = _stat(pid)
            if any(Path(os.fsdecode(word)).name == "dvc" for word in argv):
                return [pid, int(fields[19])]
            pid = int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def params_changed_during_the_run(stage: str) -> str | None:
    """Why a stage must stop because its DVC run started with other params, or None. The first stage a DVC run starts
    records params.yaml's hash (RUN_RECORDS, a file per run); each later stage of the same run compares, when it
    starts and when it ends. A second `dvc exp run` in the same workspace rewrites params.yaml before it finds the
    workspace busy (and may run its own first stages), and the first run's stages would read the second's params, or
    record their outputs under them."""
    run = dvc_run()
    if run is None or not RUN_RECORDS.parent.parent.is_dir():
        return None
    digest = hashlib.sha256(Path("params.yaml").read_bytes()).hexdigest()
    path = RUN_RECORDS / f"{run[0]}-{run[1]}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        for old in RUN_RECORDS.glob("*.json"):  # the records of DVC runs that have ended
            pid, _, started = old.stem.partition("-")
            if not _alive(int(pid), int(started)):
                old.unlink(missing_ok=True)
        write_json({"params_sha256": digest, "first_stage": stage}, path)
        return None
    if record["params_sha256"] == digest:
        return None
    return (f"{stage}: params.yaml changed during this DVC run (after its stage {record['first_stage']} started), "
            "most likely by another `dvc exp run` in this workspace, which rewrites params.yaml before it finds the "
            "workspace busy. This run stops rather than mix two settings. Run experiments side by side with "
            "`dvc exp run --queue ...` then `dvc queue start`, or with `dvc exp run --temp ...`; then run this one "
            "again.")


def _alive(pid: int, started: int) -> bool:
    """Whether process `pid`, started at `started` clock ticks after boot, still runs (a pid can be reused)."""
    try:
        return int(_stat(pid)[19]) == started
    except (OSError, ValueError, IndexError):
        return False


def stop_if_params_changed_during_the_run(stage: str) -> None:
    """Stop a stage before any work when its DVC run's params.yaml has changed (params_changed_during_the_run)."""
    if reason := params_changed_during_the_run(stage):
        sys.exit(reason)


def _fail_if_params_changed_while_it_ran(stage: str) -> None:
    """At a stage's exit: when params.yaml changed while it ran, exit 1 (an exit handler cannot otherwise set the
    status), so that DVC records none of its outputs under the new params."""
    if reason := params_changed_during_the_run(stage):
        print(reason, file=sys.stderr, flush=True)
        os._exit(1)


def _log_resources(log: logging.Logger) -> None:
    """The process's wall-clock seconds since it started (imports included) and its peak resident memory (and the
    peak GPU memory torch allocated)."""
    started = int(_stat(os.getpid())[19])  # clock ticks after boot
    seconds = time.clock_gettime(time.CLOCK_BOOTTIME) - started / os.sysconf("SC_CLK_TCK")
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    torch = sys.modules.get("torch")
    gpu = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
           if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized() else "")
    log.info("resources: %.1f s, peak memory %.0f MiB%s (rank %s)", seconds, rss_mib, gpu, os.environ.get("RANK", "0"))
