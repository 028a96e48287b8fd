"""What every stage does first: logging, offline mode, thread count, the validated params, and a last log line with
the stage's seconds and peak memory (bench/study_timing.py reads it)."""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

from twogrpo.config import Params, load_params
from twogrpo.distributed import cores_per_process


def hub_commit(repo_id: str, revision: str, repo_type: str) -> str:
    """The commit a hub revision points at, for the record; "unresolved (...)" when the hub cannot be asked (offline
    mode reading a cached copy)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
    except Exception as err:  # noqa: BLE001 - any failure to ask is recorded, never fatal: the data was read
        return f"unresolved ({type(err).__name__})"


def start_stage(name: str) -> Params:
    """Configure the process for a stage and return the params, logged first (the resolved config). The hub's
    offline default is set by the `stages` package, before the hub libraries are imported."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    params = load_params()
    torch.set_num_threads(params.runtime.threads or cores_per_process())
    log = logging.getLogger(name)
    log.info("params: %s", json.dumps(dataclasses.asdict(params), default=str))
    atexit.register(_log_resources, log)
    return params


def relaunch(launch: str, module: str) -> None:
    """Run this stage again as `launch` (runtime.launch) starts it, unless that is `python` or this process is already
    one that a launcher started. DVC's command stays `python -m <module>` whatever the launch, so changing it reruns
    nothing. The launch's words go to the launcher as arguments (this interpreter's accelerate), never through a
    shell; $VARIABLES in them are expanded (`--machine_rank $SLURM_NODEID` on several nodes). TWOGRPO_LAUNCHED marks
    the processes started, so a one-process accelerate config (which sets no WORLD_SIZE) does not start again."""
    words = [os.path.expandvars(word) for word in shlex.split(launch)]
    if words == ["python"] or "WORLD_SIZE" in os.environ or os.environ.get("TWOGRPO_LAUNCHED"):
        return
    os.environ["TWOGRPO_LAUNCHED"] = "1"
    os.execv(sys.executable, [sys.executable, "-m", "accelerate.commands.launch", *words[2:], "-m", module,
                              *sys.argv[1:]])


def _log_resources(log: logging.Logger) -> None:
    """The process's wall-clock seconds since it started (imports included) and its peak resident memory (and the
    peak GPU memory torch allocated)."""
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # clock ticks after boot
    seconds = time.clock_gettime(time.CLOCK_BOOTTIME) - started / os.sysconf("SC_CLK_TCK")
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    gpu = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
           if torch.cuda.is_available() and torch.cuda.is_initialized() else "")
    log.info("resources: %.1f s, peak memory %.0f MiB%s (rank %s)", seconds, rss_mib, gpu, os.environ.get("RANK", "0"))
