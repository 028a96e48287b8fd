"""A real training stage (and the base stage's SFT) killed with SIGKILL mid-run resumes from its checkpoint under
`dvc repro` and ends exactly where an uninterrupted run ends (CPU, HF engine)."""

import json
import subprocess

import pandas as pd
import pytest
import torch

from tests.fixtures import (
    ON_RESUMABLE_BASE,
    RESUMABLE,
    checkpoint_step,
    copy_project,
    kill_midway,
    kill_training_midway,
    new_project,
    resume_training,
    run,
    tool_env,
)

pytestmark = [pytest.mark.slow, ON_RESUMABLE_BASE]  # one worker: one base, one reference run

COUNTERS = ["gen_step", "prompts_seen", "rollouts", "tokens", "opt_steps", "mean_reward", "eval_accuracy", "lr"]


@pytest.fixture(scope="module")
def reference(resumable_base, tmp_path_factory):
    """An uninterrupted run of train@g2-0 on the shared base."""
    project = copy_project(resumable_base, tmp_path_factory.mktemp("uninterrupted") / "project")
    run(["dvc", "repro", "train@g2-0"], project)
    return project


def test_a_killed_training_stage_resumes_and_matches_an_uninterrupted_run(tmp_path, resumable_base, reference):
    weights = (reference / "models/g2-s0/model.safetensors").read_bytes()
    ledger = pd.read_parquet(reference / "runs/g2-s0/steps.parquet")
    live = json.loads((reference / "runs/g2-s0/live/metrics.json").read_text())
    assert not (reference / "checkpoints" / "g2-s0").exists()  # deleted once the outputs were written

    project = copy_project(resumable_base, tmp_path / "killed")
    killed_at = kill_training_midway(project)
    assert not (project / "models/g2-s0").exists()  # no half-written output

    resume_training(project, killed_at)
    assert (project / "models/g2-s0/model.safetensors").read_bytes() == weights
    resumed = pd.read_parquet(project / "runs/g2-s0/steps.parquet")
    pd.testing.assert_frame_equal(ledger[COUNTERS], resumed[COUNTERS])
    relogged = json.loads((project / "runs/g2-s0/live/metrics.json").read_text())
    assert relogged["step"] == live["step"] and relogged["train"]["rollouts"] == live["train"]["rollouts"]
    assert not (project / "checkpoints" / "g2-s0").exists()


def test_a_killed_base_sft_resumes_and_matches_an_uninterrupted_run(tmp_path, resumable_base):
    """The SFT saves checkpoints/base/ at each accuracy measurement (every 100 of its 200 steps here): killed after
    the first, `dvc repro` continues from step 100 and saves the same weights as the uninterrupted run."""
    project = new_project(tmp_path / "killed", RESUMABLE)
    run(["dvc", "repro", "prepare"], project)
    kill_midway(project, "base", "base", 100)
    assert checkpoint_step(project, "base") == 100, "the SFT was not killed midway"
    assert not (project / "models/base").exists()  # no half-written output

    rerun = subprocess.run(["dvc", "repro", "base"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "SFT resumed after step 100" in rerun.stdout + rerun.stderr
    assert (project / "models/base/model.safetensors").read_bytes() == \
        (resumable_base / "models/base/model.safetensors").read_bytes()
    resumed = json.loads((project / "metrics/base.json").read_text())
    assert resumed["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # the kind of CPU it is exact on
    curve = resumed["curve"]
    assert [(p["step"], p["val_accuracy"]) for p in curve] == [
        (p["step"], p["val_accuracy"]) for p in json.loads((resumable_base / "metrics/base.json").read_text())["curve"]]
    assert not (project / "checkpoints" / "base").exists()  # deleted once the outputs were written
