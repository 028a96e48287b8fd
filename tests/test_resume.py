"""A real training stage (and the base stage's SFT) killed with SIGKILL mid-run resumes from its checkpoint under
`dvc repro` and ends exactly where an uninterrupted run ends (CPU, HF engine)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.fixtures import new_project, process_tree, run, tiny_params, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]  # one worker: one reference run

# 8 generation steps, a checkpoint after each
PARAMS = tiny_params(train={"arms": {"g2": {"group_size": 2, "lr_scaling": "linear"}}, "seeds": [0], "prompts": 64,
                            "reference_group_size": 2})
COUNTERS = ["gen_step", "prompts_seen", "rollouts", "tokens", "opt_steps", "mean_reward", "eval_accuracy", "lr"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the base stage and of train@g2-0."""
    project = new_project(tmp_path_factory.mktemp("uninterrupted"), PARAMS)
    run(["dvc", "repro", "train@g2-0"], project)
    return project


def checkpoint_step(project: Path, name: str = "g2-s0") -> int:
    state = project / "checkpoints" / name / "state.json"
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_training_midway(project: Path) -> int:
    """Start `dvc repro train@g2-0`, SIGKILL it and every process it started (torchrun's workers start their own
    group, so not only the process group) once the checkpoint of step 3 of 8 exists; the step last checkpointed."""
    job = subprocess.Popen(["dvc", "repro", "train@g2-0"], cwd=project, env=tool_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while checkpoint_step(project) < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in process_tree(job.pid):
        os.kill(pid, signal.SIGKILL)
    job.wait()
    killed_at = checkpoint_step(project)
    assert 3 <= killed_at < 8, "the run was not killed mid-training"
    return killed_at


def resume_training(project: Path, killed_at: int) -> None:
    """Rerun `dvc repro train@g2-0` and check that it resumed after the step last checkpointed."""
    rerun = subprocess.run(["dvc", "repro", "train@g2-0"], cwd=project, env=tool_env(), capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed after generation step {killed_at} of 8" in rerun.stdout + rerun.stderr


def test_a_killed_training_stage_resumes_and_matches_an_uninterrupted_run(tmp_path, reference):
    weights = (reference / "models/g2-s0/model.safetensors").read_bytes()
    ledger = pd.read_parquet(reference / "runs/g2-s0/steps.parquet")
    live = json.loads((reference / "runs/g2-s0/live/metrics.json").read_text())
    assert not (reference / "checkpoints" / "g2-s0").exists()  # deleted once the outputs were written

    project = new_project(tmp_path / "killed", PARAMS)
    run(["dvc", "repro", "base"], project)
    killed_at = kill_training_midway(project)
    assert not (project / "models/g2-s0").exists()  # no half-written output

    resume_training(project, killed_at)
    assert (project / "models/g2-s0/model.safetensors").read_bytes() == weights
    resumed = pd.read_parquet(project / "runs/g2-s0/steps.parquet")
    pd.testing.assert_frame_equal(ledger[COUNTERS], resumed[COUNTERS])
    relogged = json.loads((project / "runs/g2-s0/live/metrics.json").read_text())
    assert relogged["step"] == live["step"] and relogged["train"]["rollouts"] == live["train"]["rollouts"]
    assert not (project / "checkpoints" / "g2-s0").exists()


def test_a_killed_base_sft_resumes_and_matches_an_uninterrupted_run(tmp_path, reference):
    """The SFT saves checkpoints/base/ at each accuracy measurement (every 100 of its 200 steps here): killed after
    the first, `dvc repro` continues from step 100 and saves the same weights as the uninterrupted run."""
    project = new_project(tmp_path / "killed", PARAMS)
    run(["dvc", "repro", "prepare"], project)
    job = subprocess.Popen(["dvc", "repro", "base"], cwd=project, env=tool_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while checkpoint_step(project, "base") < 100 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in process_tree(job.pid):
        os.kill(pid, signal.SIGKILL)
    job.wait()
    assert checkpoint_step(project, "base") == 100, "the SFT was not killed midway"
    assert not (project / "models/base").exists()  # no half-written output

    rerun = subprocess.run(["dvc", "repro", "base"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "SFT resumed after step 100" in rerun.stdout + rerun.stderr
    assert (project / "models/base/model.safetensors").read_bytes() == \
        (reference / "models/base/model.safetensors").read_bytes()
    resumed = json.loads((project / "metrics/base.json").read_text())
    assert resumed["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # the kind of CPU it is exact on
    curve = resumed["curve"]
    assert [(p["step"], p["val_accuracy"]) for p in curve] == [
        (p["step"], p["val_accuracy"]) for p in json.loads((reference / "metrics/base.json").read_text())["curve"]]
    assert not (project / "checkpoints" / "base").exists()  # deleted once the outputs were written
