"""Shared test inputs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from twogrpo.config import ChainSumConfig, PrepareConfig

ROOT = Path(__file__).resolve().parents[1]


def chain_sums(seed: int, train_size: int, n_test: int, max_terms: int = 2, max_digits: int = 1) -> PrepareConfig:
    """The embedded task's prepare section at a small size (2 to max_terms terms of 1 to max_digits digits)."""
    return PrepareConfig(seed=seed, train_set="chain_sum", train_size=train_size, benchmarks=("chain_sum",),
                         local_root="", sources={},
                         chain_sum=ChainSumConfig(n_test=n_test, min_terms=2, max_terms=max_terms, min_digits=1,
                                                  max_digits=max_digits))


def shared_benchmarks() -> Path:
    """The real benchmark files (../shared/benchmarks beside the checkout). TWOGRPO_BENCHMARKS overrides; a clean
    clone elsewhere (as CI makes) finds them beside the checkout it was cloned from."""
    if os.environ.get("TWOGRPO_BENCHMARKS"):
        return Path(os.environ["TWOGRPO_BENCHMARKS"])
    root = Path(__file__).resolve().parents[1]
    candidates = [root.parent / "shared" / "benchmarks"]
    origin = subprocess.run(["git", "config", "--get", "remote.origin.url"], cwd=root, capture_output=True, text=True)
    if origin.returncode == 0 and Path(origin.stdout.strip()).is_dir():
        candidates.append(Path(origin.stdout.strip()).resolve().parent / "shared" / "benchmarks")
    return next((c for c in candidates if c.is_dir()), candidates[0])


def new_project(project: Path, params: dict) -> Path:
    """A copy of the study (code, dvc.yaml, the plots template, the paper's tables) in a fresh git + DVC repository
    at `project`, with `params` as params.yaml, committed."""
    for item in ("dvc.yaml", "stages", "twogrpo", "notebooks", "data/paper", "conf/accelerate", ".dvcignore"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, project / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (project / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, project / item)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("checkpoints/\n")
    run(["git", "init", "-q"], project)
    run(["git", "config", "user.name", "smoke test"], project)  # dvc exp commits need an identity
    run(["git", "config", "user.email", "smoke@test.invalid"], project)
    run(["dvc", "init", "-q"], project)
    run(["dvc", "config", "core.analytics", "false"], project)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")  # the plots template dvc.yaml names
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny study"], project)
    return project


def tool_env() -> dict[str, str]:
    """This environment's tools (dvc, accelerate) first on PATH, and one torch thread per stage."""
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                         "TWOGRPO_THREADS": "1"}


def process_tree(root: int) -> list[int]:
    """root and every process descended from it (read from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command (dvc, git) with tool_env(); its stdout, or a failed assertion showing the ends of its output."""
    result = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout
