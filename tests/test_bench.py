"""Every CPU bench script runs at its smallest size and does the work it states: one smoke run each, as a user runs
it (`python bench/<script>.py ...`), checked on the rows it prints. The scripts that train check their own generation
steps and fail when they differ from the ones asked. bench/study_timing.py is not here: its workload is the whole
study (tests/test_pipeline.py runs it; tests/test_run.py checks the timing it reads); bench/suite_cpu.py's is
`make test` (its exit hook is checked on two processes); bench/gpu_paper_shape.py's CPU check is in
tests/test_plan.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import ON_RESUMABLE_BASE, bench_script, copy_project, tiny_params, tool_env

ROOT = Path(__file__).resolve().parents[1]

# On the worker that builds the resumable study's SFT base: the training benches start from a copy of it.
pytestmark = [pytest.mark.slow, ON_RESUMABLE_BASE]


def bench(script: str, *args: str, cwd: Path = ROOT) -> list[str]:
    """The markdown table rows (headers and rules left out) that `python bench/<script> args` prints in `cwd`."""
    env = tool_env() | {"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")] + [""]
    rule = [line.startswith("|---") for line in lines]
    return [line for i, line in enumerate(lines[:-1]) if not rule[i] and not rule[i + 1]]


@pytest.fixture(scope="module")
def base_project(resumable_base, tmp_path_factory):
    """A tiny study's prepared data and base policy, what the training benches start from: the resumable study's
    (its prepare and base settings are the tiny study's; only its train section differs)."""
    return copy_project(resumable_base, tmp_path_factory.mktemp("bench") / "project", tiny_params())


def test_calibration():
    assert len(bench("calibration.py", "--studies", "10")) == 9  # 3 seed counts x 3 seed spreads


def test_update_memory():
    (row,) = bench("update_memory.py", "--lengths", "128", "--no-full")
    assert row.startswith("| 128 |")


def test_rollout_throughput():
    rows = bench("rollout_throughput.py", "--engines", "hf", "--samples", "4", "--new-tokens", "4")
    assert [row.split("|")[2].strip() for row in rows] == ["hf", "hf"]  # two model sizes


def test_gpu_step_tiny_on_the_cpu():
    rows = bench("gpu_step.py", "--tiny", "--batch", "2", "--seq", "64", "--samples", "4", "--new-tokens", "8")
    assert len(rows) == 2  # a train step and a generation


def test_grading_throughput(tmp_path):
    math500 = ROOT / "tests/data/benchmarks/math500/test.jsonl"
    rows = bench("grading_throughput.py", "--processes", "1", "--math500", str(math500), cwd=tmp_path)
    assert [row.split("|")[1].strip() for row in rows] == ["MATH-500 solutions", "MATH-500 solutions, wrong gold"]


def test_ladder_reads_the_recorded_ladder():
    assert any(row.startswith("| model size |") for row in bench("ladder.py"))


def test_contention(base_project):
    rows = bench("contention.py", "--gen-steps", "1", cwd=base_project)
    assert [row.split("|")[1].strip() for row in rows] == [
        "nothing", "1 CPU-burning process", f"{os.cpu_count()} CPU-burning processes"][: len(rows)]
    assert len(rows) == 3 or os.cpu_count() == 1


def test_trl_step(base_project):
    rows = bench("trl_step.py", "--groups", "2", "--gen-steps", "1", "--repeats", "1", cwd=base_project)
    cells = [[cell.strip() for cell in row.split("|")[1:4]] for row in rows]
    assert [trainer for g, trainer, repeat in cells if (g, repeat) == ("2", "0")] == ["ours", "ours, full pass", "TRL"]
    assert sum(g == "2" and trainer.replace(".", "").isdigit() for g, trainer, _ in cells) == 1  # the medians


def test_gpu_train_arms_on_the_cpu(base_project):
    rows = bench("gpu_train_arms.py", "--arms", "g2", "--prompts", "8", "--epochs", "1", cwd=base_project)
    assert [row.split("|")[1].strip() for row in rows] == ["g2"]


def test_suite_cpu_counts_each_python_process_by_what_it_ran(tmp_path):
    """bench/suite_cpu.py's whole workload is `make test`, too long to run here: its exit hook and its grouping are
    checked on two processes instead."""
    suite_cpu = bench_script("suite_cpu")
    log = tmp_path / "cpu.jsonl"
    env = suite_cpu.hooked_env(tmp_path / "hook", log)
    subprocess.run([sys.executable, "-c", "sum(range(10**7))"], env=env, check=True)
    subprocess.run([sys.executable, "-m", "json.tool"], env=env, check=True, input="{}", capture_output=True, text=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [suite_cpu.kind(r["argv"]) for r in records] == ["-c", "json/tool.py"]
    assert records[0]["cpu"] > 0.05  # the sum ran in it
    assert suite_cpu.kind([str(ROOT / ".venv/bin/dvc"), "exp", "run"]) == "dvc exp"
