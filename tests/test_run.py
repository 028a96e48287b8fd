"""What every stage does at start and exit (twogrpo.run), and the study benchmark that reads it."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import bench_script, new_project, tiny_params, tool_env

ROOT = Path(__file__).resolve().parents[1]


def test_a_stage_logs_its_seconds_and_peak_memory_and_the_study_benchmark_reads_them():
    grow = "from twogrpo.run import start_stage; start_stage('x'); block = b'x' * (300 * 2**20)"
    done = subprocess.run([sys.executable, "-c", grow], cwd=ROOT, capture_output=True, text=True, check=True)
    table = bench_script("study_timing").per_stage("Running stage 'x@0':\n" + done.stderr)
    assert list(table.index) == ["x@0"]
    assert table.loc["x@0", "peak_mib"] >= 300  # the 300 MiB it allocated
    assert 0 < table.loc["x@0", "seconds"] < 120


def test_a_stage_starts_itself_once_under_its_launcher_with_arguments_not_shell_text(monkeypatch):
    from twogrpo import launch

    started = []
    monkeypatch.setattr(launch.os, "execv", lambda path, argv: started.append(argv))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("TWOGRPO_LAUNCHED", raising=False)
    monkeypatch.setenv("NODE", "3")
    monkeypatch.setattr(sys, "argv", ["stages/train.py", "--arm", "g2;touch x", "--seed", "0"])
    launch.relaunch("python", "stages.train")
    assert started == []
    launch.relaunch("accelerate launch --config_file conf/accelerate/gpus-1.yaml --machine_rank $NODE",
                        "stages.train")
    assert started == [[sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        "conf/accelerate/gpus-1.yaml", "--machine_rank", "3", "-m", "stages.train", "--arm",
                        "g2;touch x", "--seed", "0"]]
    # The started process (a one-process config sets no WORLD_SIZE) does not start again.
    launch.relaunch("accelerate launch --config_file conf/accelerate/gpus-1.yaml", "stages.train")
    assert len(started) == 1


@pytest.mark.slow
def test_a_second_dvc_exp_run_in_the_workspace_stops_the_first_instead_of_mixing_params(tmp_path):
    """Two `dvc exp run` started one after the other in one workspace: the second rewrites params.yaml, then fails on
    DVC's lock; the first run's next stage sees params.yaml changed since the run's first stage and stops, naming the
    cause and the ways to run experiments side by side. A run on its own is not stopped (the study's tests)."""
    project = new_project(tmp_path / "study", tiny_params())
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(["dvc", "exp", "run"], cwd=project, env=tool_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while "Running stage 'base'" not in (tmp_path / "first.log").read_text() and time.monotonic() < deadline:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        second = subprocess.run(["dvc", "exp", "run", "-S", "train.clip_high=0.2"], cwd=project, env=tool_env(),
                                capture_output=True, text=True)
        first.wait(timeout=600)
    finally:
        first.kill()
    out = (tmp_path / "first.log").read_text()
    assert second.returncode != 0 and "clip_high: 0.2\n" in (project / "params.yaml").read_text()
    assert first.returncode != 0, out[-3000:]
    assert "params.yaml changed during this DVC run (after its stage validate started)" in out
    assert "dvc exp run --queue" in out and "dvc exp run --temp" in out
    assert "Running stage 'train" not in out.split("params.yaml changed during")[0]  # stopped before any training
