"""Shared test inputs."""

import copy
import dataclasses
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from twogrpo.config import ChainSumConfig, PrepareConfig

ROOT = Path(__file__).resolve().parents[1]




def conf_section(section: str, **changes):
    """A params section of the embedded default (conf/) with `changes`: a test's settings named by what differs."""
    return dataclasses.replace(getattr(_conf_params()[1], section), **changes)


def chain_sums(seed: int, train_size: int, n_test: int, max_terms: int = 2, max_digits: int = 1,
               n_validation: int = 20) -> PrepareConfig:
    """The embedded task's prepare section at a small size (2 to max_terms terms of 1 to max_digits digits)."""
    return PrepareConfig(seed=seed, train_set="chain_sum", train_size=train_size, benchmarks=("chain_sum",),
                         local_root="", sources={},
                         chain_sum=ChainSumConfig(n_test=n_test, n_validation=n_validation, min_terms=2,
                                                  max_terms=max_terms, min_digits=1,
                                                  max_digits=max_digits))


BENCHMARKS = ROOT / "tests" / "data" / "benchmarks"  # excerpts of the real files, in their layout (SOURCES.md)

# The study at a size that trains in seconds: conf/'s embedded default with these changes (`tiny_params`).
# One-digit sums: a 1-layer model learns some of them in 200 SFT steps, so GRPO sees mixed groups.
TINY_CHANGES = {
    "prepare": {"train_size": 120, "chain_sum": {"n_test": 30, "n_validation": 20, "max_terms": 2, "max_digits": 1}},
    "task": {"max_new_tokens": 12},
    "base": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128,
             "warmup_steps": 10, "batch_size": 32, "max_steps": 200, "eval_every": 100, "val_size": 16,
             "target_accuracy": 0.99},
    "train": {"arms": {"g4": {"group_size": 4, "lr_scaling": "linear"},
                       "g2": {"group_size": 2, "lr_scaling": "linear"},
                       "g2-rs": {"group_size": 2, "lr_scaling": "none", "resample": True}},
              "seeds": [0, 1], "prompts": 16, "epochs": 1, "rollouts_per_minibatch": 8, "generation_batch_prompts": 8,
              "reference_lr": 1.0e-3,
              "reference_group_size": 4, "warmup_gen_steps": 1, "weight_decay": 0.0, "loss_agg": "token-mean",
              "micro_batch_rollouts": 8, "skip_dead_groups": True, "eval_problems": 8},
    "evaluate": {"problems": 16, "samples": 4, "max_new_tokens": 12, "seed": 7},
    "contrastive": {"prompts": 16, "responses": 6, "shifts": 3},
    "runtime": {"checkpoint_every": 1, "threads": 1},  # one torch thread per stage: tests run side by side
}
REPLACED = {("train", "arms")}  # mappings replaced whole, not merged


def changed(params: dict, changes: dict, where: tuple[str, ...] = ()) -> dict:
    """`params` with `changes` merged in, key by key (a key missing from params is refused: a typo, not a change)."""
    out = copy.deepcopy(params)
    for key, value in changes.items():
        if key not in out:
            raise KeyError(f"{'.'.join((*where, key))} is not a params key")
        if isinstance(value, dict) and (*where, key) not in REPLACED:
            out[key] = changed(out[key], value, (*where, key))
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def _conf_params():
    """conf/ composed as DVC composes params.yaml: (the mapping, the validated Params)."""
    from tools.setups import compose
    return compose([])


def tiny_params(**changes: dict) -> dict:
    """params.yaml for a study that trains in seconds: conf/ composed as DVC composes it, TINY_CHANGES applied, then
    `changes` (section=mapping)."""
    return changed(changed(_conf_params()[0], TINY_CHANGES), changes)


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


# One arm (2-GRPO) over 64 prompts: 8 generation steps, a checkpoint after each (the resume and multi-process tests).
RESUMABLE = tiny_params(train={"arms": {"g2": {"group_size": 2, "lr_scaling": "linear"}}, "seeds": [0], "prompts": 64,
                               "reference_group_size": 2})
# The pytest-xdist group of every test that starts from the `resumable_base` fixture (tests/conftest.py): one worker
# then builds it once.
ON_RESUMABLE_BASE = pytest.mark.xdist_group("resumable")


def copy_project(built: Path, project: Path, params: dict | None = None) -> Path:
    """A copy of a built project (its git and DVC repositories, outputs and cache) at `project`, with `params` as its
    params.yaml if given: `dvc repro` there reruns only what the params change."""
    shutil.copytree(built, project, symlinks=True)
    if params is not None:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def checkpoint_step(project: Path, name: str = "g2-s0") -> int:
    state = project / "checkpoints" / name / "state.json"
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_midway(project: Path, stage: str, checkpoint: str, step: int) -> None:
    """Start `dvc repro <stage>` and SIGKILL it and every process it started (torchrun's workers start their own
    group, so not only the process group) once the checkpoint of `step` exists."""
    job = subprocess.Popen(["dvc", "repro", stage], cwd=project, env=tool_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while checkpoint_step(project, checkpoint) < step and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in process_tree(job.pid):
        os.kill(pid, signal.SIGKILL)
    job.wait()


def kill_training_midway(project: Path) -> int:
    """Kill `dvc repro train@g2-0` once the checkpoint of step 3 of 8 exists; the step last checkpointed."""
    kill_midway(project, "train@g2-0", "g2-s0", 3)
    killed_at = checkpoint_step(project)
    assert 3 <= killed_at < 8, "the run was not killed mid-training"
    return killed_at


def resume_training(project: Path, killed_at: int) -> None:
    """Rerun `dvc repro train@g2-0` and check that it resumed after the step last checkpointed."""
    rerun = subprocess.run(["dvc", "repro", "train@g2-0"], cwd=project, env=tool_env(), capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed after generation step {killed_at} of 8" in rerun.stdout + rerun.stderr


def bench_script(name: str):
    """bench/<name>.py as a module (a script: it imports its neighbour bench/figures.py as `figures`)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_env() -> dict[str, str]:
    """This environment's tools (dvc, accelerate) first on PATH."""
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


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


# The tiny trainer's settings, shared by the tests that train, sample or evaluate a tiny random policy in process: the
# embedded default's sections with the sizes cut to seconds.
TASK = conf_section("task", max_new_tokens=6)
EVAL = conf_section("evaluate", problems=4, samples=2, max_new_tokens=6, seed=0)
TRAIN = conf_section("train", seeds=(0,), arms={}, prompts=16, epochs=1, rollouts_per_minibatch=16,
                     generation_batch_prompts=8, reference_lr=1e-3, reference_group_size=4, warmup_gen_steps=0,
                     weight_decay=0.0, loss_agg="token-mean", micro_batch_rollouts=8, eval_every=2,
                     skip_dead_groups=True, eval_problems=4, eval_samples=2)
BASE = conf_section("base", hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, lr=1e-3,
                    warmup_steps=1, weight_decay=0.0, batch_size=8, max_steps=1, eval_every=1, val_size=1,
                    target_accuracy=1.0)


needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless Chromium is not installed (Debian package `chromium`): the reports are not rendered in a browser")


# Run in the page once it has loaded: the tables, figures and code blocks wider than the box they sit in, written
# into the DOM for --dump-dom to show.
MEASURE_WIDTHS = """<script>window.addEventListener("load", () => {
  const wide = [...document.querySelectorAll("table, img, pre")].filter(
    el => el.getBoundingClientRect().width > el.parentElement.getBoundingClientRect().width + 1);
  document.body.setAttribute("data-too-wide", wide.map(el => el.tagName + ":" + el.textContent.slice(0, 40)).join("|"));
});</script>"""


def check_renders_offline(html: Path, texts: tuple[str, ...], shot: Path) -> None:
    """Headless Chromium opens the HTML offline in a 1,400-pixel window: the page has `texts` after scripts ran, no
    script error is logged, no table, figure or code block is wider than its box (a wide table scrolls inside
    it), and the screenshot is not blank."""
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
               "--window-size=1400,1600"]
    measured = shot.with_suffix(".measured.html")  # the page (self-contained) with the width check appended
    measured.write_text(html.read_text().replace("</body>", MEASURE_WIDTHS + "</body>", 1))
    dom = subprocess.run([*browser, "--dump-dom", f"file://{measured}"], capture_output=True, text=True, timeout=120)
    assert all(text in dom.stdout for text in texts)
    errors = [line for line in dom.stderr.splitlines() if "Uncaught" in line or "CONSOLE(" in line and "rror" in line]
    assert errors == []
    too_wide = re.search(r'data-too-wide="([^"]*)"', dom.stdout)
    assert too_wide is not None and too_wide.group(1) == "", too_wide and too_wide.group(1)
    subprocess.run([*browser, f"--screenshot={shot}", f"file://{html}"], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert (pixels < 128).mean() > 0.005  # dark text and figures on a white page, not a blank one
