"""How a stage starts its processes (runtime.launch, runtime.eval_launch): `python`, or `accelerate launch` with an
accelerate config (conf/accelerate/). What a launch command starts is read from its words and its config file;
relaunch starts it."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class LaunchError(ValueError):
    """A launch command that cannot start: its params key and value named (twogrpo.config reports it as a
    ParamsError)."""


def check(launch: str, key: str) -> None:
    """Refuse a launch command other than `python` or `accelerate launch ...`, or one whose config cannot be read."""
    words = shlex.split(launch)
    if words != ["python"] and words[:2] != ["accelerate", "launch"]:
        raise LaunchError(f"{key}={launch!r}: expected 'python' or 'accelerate launch --config_file <config>'")
    layout(launch, key)


def processes(launch: str, key: str) -> tuple[int, bool]:
    """(processes, sharded) that a launch command starts: one for `python`, else its accelerate config's (or its
    --num_processes)."""
    count, _, sharded = layout(launch, key)
    return count, sharded


def layout(launch: str, key: str) -> tuple[int, int, bool]:
    """(processes, machines, sharded) that a launch command starts: (1, 1, False) for `python`, else its accelerate
    config's (or its --num_processes and --num_machines)."""
    given, config = _options(launch), accelerate_config(launch, key)
    if not config:
        return 1, 1, False
    try:
        count = int(given.get("num_processes", config["num_processes"]))
        machines = int(given.get("num_machines", config.get("num_machines", 1)))
        return count, machines, config.get("distributed_type") == "FSDP"
    except (KeyError, TypeError, ValueError) as error:
        raise LaunchError(f"{key}={launch!r}: cannot read num_processes from {given['config_file']} "
                          f"({type(error).__name__}: {error})") from None


def accelerate_config(launch: str, key: str) -> dict:
    """The accelerate config a launch command names ({} for `python`). The project's GPU configs name `gpu_ids`;
    its CPU ones (cpu-2, fsdp-cpu-2) do not."""
    given = _options(launch)
    if "config_file" not in given:
        return {}
    path = Path(given["config_file"])
    if not path.is_absolute() and not path.exists():  # relative to the project, wherever it is run from
        path = ROOT / path
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LaunchError(f"{key}={launch!r}: cannot read num_processes from {path} "
                          f"({type(error).__name__}: {error})") from None
    if not isinstance(config, dict):
        raise LaunchError(f"{key}={launch!r}: {path} is not an accelerate config (a YAML mapping)")
    return config


def _options(launch: str) -> dict[str, str]:
    """The --options of a launch command: `--config_file x`, `--config_file=x` and `--config-file x` alike."""
    words, options = shlex.split(launch), {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            if not value and i + 1 < len(words) and not words[i + 1].startswith("-"):
                value = words[i + 1]
            options[name.replace("-", "_")] = value
    return options


def cores_per_process() -> int:
    """This process's share of the machine's cores: all of them, or under `accelerate launch` the cores divided by
    the processes on this machine (LOCAL_WORLD_SIZE)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


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
