"""The planner's memory model against peak memory measured on the CPU, the preflight, and the hardware choice."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.fixtures import ROOT
from tools.setups import compose, compose_to, time_ratios
from twogrpo import hours, plan
from twogrpo.config import ParamsError

GIB = 2**30


@pytest.mark.parametrize("shape", [
    "--hidden 64 --response-tokens 192",
    "--hidden 128 --heads 4 --kv-heads 2 --intermediate 384 --response-tokens 448 --gradient-checkpointing",
    "--hidden 256 --layers 4 --heads 4 --kv-heads 2 --intermediate 768 --response-tokens 448",
])
@pytest.mark.slow
def test_the_memory_model_is_within_a_quarter_of_the_peak_measured_on_the_cpu(shape):
    """8 rollouts of 64 prompt tokens with Qwen2.5's vocabulary (151,936): one process per shape, its peak resident
    memory above its imports (glibc returning freed tensors: MALLOC_MMAP_THRESHOLD_) against the plan."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "tests.memory_probe", *shape.split()], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["measured"] > 0.5 * GIB  # the logits of a chunk alone are 0.75 GiB: a real measurement
    assert abs(result["estimate"] / result["measured"] - 1) <= 0.25, result


def paper(*overrides):
    return compose(["setup=qwen-1.5b-math", *overrides])[1]


def test_each_paper_setup_states_the_papers_gpus_and_bf16():
    for setup, gpus, sharded in (("qwen-1.5b-math", 4, False), ("qwen-1.5b-dapo", 4, False), ("ds-1.5b-math", 4, False),
                                 ("qwen-7b-math", 8, True), ("ablation-qwen-7b-dapo", 8, True)):
        params = compose([f"setup={setup}"])[1]
        assert (params.runtime.gpus, params.runtime.launch_processes) == (gpus, (gpus, sharded)), setup
        assert params.train.precision == "bfloat16" and params.train.micro_batch_tokens > 0, setup
    assert paper("hardware=gpus-1").runtime.launch_processes == (1, False)  # one setting overrides them
    assert compose([])[1].runtime.gpus == 0  # the embedded default: the CPU


def test_gpus_that_the_launch_does_not_start_are_refused_naming_the_setting():
    with pytest.raises(ParamsError, match=r"runtime.gpus=4 but runtime.launch='python' starts 1 process.*hardware"):
        paper("runtime.launch=python")


@pytest.mark.parametrize("launch", ["torchrun --nproc_per_node 2", "python; touch x", "", "accelerate launch "
                                    "--config_file conf/accelerate/nowhere.yaml"])
def test_a_launch_that_is_not_python_or_accelerate_is_refused_naming_the_key(launch):
    with pytest.raises(ParamsError, match=r"runtime\.launch="):
        compose([f"runtime.launch='{launch}'"])


def test_the_preflight_stops_a_gpu_setup_on_a_machine_without_its_gpus():
    import torch

    if torch.cuda.device_count() >= 4:
        pytest.skip("this machine has the GPUs")
    with pytest.raises(plan.PreflightError, match=rf"runtime.gpus=4 GPUs, 4 on this machine, which has "
                                                  rf"{torch.cuda.device_count()}.*-S hardware=<name>"):
        plan.preflight(paper())  # the shape from the paper's model, before it is downloaded
    with pytest.raises(plan.PreflightError, match=r"runtime.gpus=16 GPUs, 8 on this machine"):
        plan.preflight(paper("hardware=gpus-8", "runtime.gpus=16",
                             "runtime.launch='accelerate launch --config_file conf/accelerate/nodes-2x8.yaml'"))
    plan.preflight(compose([])[1], ROOT / "models" / "base")  # the CPU: nothing to check


def test_a_gpu_setup_on_a_machine_without_its_gpus_stops_in_the_first_stage_with_one_message(tmp_path):
    """Before the data and the weights would be downloaded: the message alone, once, not a traceback."""
    import torch

    if torch.cuda.device_count() >= 4:
        pytest.skip("this machine has the GPUs")
    project = tmp_path / "project"
    (project / "conf").mkdir(parents=True)
    shutil.copytree(ROOT / "conf" / "accelerate", project / "conf" / "accelerate")
    compose_to(project / "params.yaml", ["setup=qwen-1.5b-math"])
    result = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=project, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "0",
                                 "HF_DATASETS_OFFLINE": "0"}, timeout=300)
    assert result.returncode == 1
    message = [line for line in result.stderr.splitlines() if line.startswith("prepare: ")]
    assert len(message) == 1 and "the setup trains on runtime.gpus=4 GPUs" in message[0], result.stderr[-2000:]
    assert "-S hardware=<name>" in message[0]
    assert "Traceback" not in result.stderr and result.stderr.count("runtime.gpus=4") == 1
    assert not (project / "data").exists()


def test_the_preflight_stops_when_the_gpus_have_less_free_memory_than_the_plan(monkeypatch, tmp_path):
    """No GPU here: the machine's answers are stood in for (4 GPUs of 80 GiB, the third with 10 GiB free)."""
    import torch

    shape = dataclasses.replace(plan.HUB_SHAPES["Qwen/Qwen2.5-Math-1.5B"], positions=32768)
    (tmp_path / "config.json").write_text(json.dumps(shape.config()))
    assert plan.model_shape(paper(), tmp_path) == shape

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: ((10 if device == 2 else 79) * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU model {device}")
    with pytest.raises(plan.PreflightError, match=r"GPU 2 \(GPU model 2\) has 10.0 GiB free of 80.0; the plan needs "
                                                  r"[\d.]+ GiB per GPU.*train.micro_batch_tokens or "
                                                  r"rollout.vllm_memory_utilization"):
        plan.preflight(paper(), tmp_path)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (79 * GIB, 80 * GIB))
    plan.preflight(paper(), tmp_path)  # the setup fits 4 idle 80 GiB GPUs
    plan.preflight(paper())  # and so it does before the model is downloaded (the paper model's shape)


def test_the_plan_tells_whether_a_machine_fits():
    params = paper()
    fits = hours.describe_plan(params, gpus=4, gpu_memory_gib=141)
    assert "fits" in fits and "NOT" not in fits
    assert "does NOT fit" in hours.describe_plan(params, gpus=1, gpu_memory_gib=24)
    shape, work = plan.HUB_SHAPES["Qwen/Qwen2.5-Math-7B"], plan.workload(paper(), 8, 141 * GIB, sharded=True)
    replicated = plan.workload(paper(), 8, 141 * GIB, sharded=False)
    assert plan.peak_memory(shape, work) < plan.peak_memory(shape, replicated)  # sharding divides the state
    assert plan.HUB_SHAPES["Qwen/Qwen2.5-Math-1.5B"].parameters == pytest.approx(1.544e9, rel=0.001)
    assert shape.parameters == pytest.approx(7.616e9, rel=0.001)


def test_hours_follow_the_rollouts_of_each_arm_plus_fixed_costs_per_step():
    params = paper()
    planned = hours.arm_hours(params, plan.HUB_SHAPES["Qwen/Qwen2.5-Math-1.5B"], gpus=4)
    assert planned["g16"]["rollouts"] == 8 * planned["g2"]["rollouts"] == 7168 * 10 * 16
    rollout_work = {arm: h["hours"] - h["fixed_hours"] for arm, h in planned.items()}
    assert rollout_work["g16"] == pytest.approx(8 * rollout_work["g2"])
    assert 0 < planned["g2"]["update_hours"] < planned["g2"]["hours"]
    # The same steps, evaluations and checkpoints for both arms: only the AdamW steps differ (16 vs 2 per step).
    assert planned["g2"]["fixed_hours"] == pytest.approx(planned["g16"]["fixed_hours"], rel=0.05)
    assert planned["g2"]["fixed_hours"] > 0.1
    def ratio(params):
        planned = hours.hours_by_group_size(params, 4)
        return planned[2] / planned[16]

    assert 0.125 < ratio(params) < 0.5  # a prediction, not 1/8
    fewer = paper("train.eval_every=140", "runtime.checkpoint_every=0")  # fewer fixed costs: nearer 1/8
    assert 0.125 < ratio(fewer) < ratio(params)
    assert all(":" in line and len(line) > 40 for line in hours.sources())  # each figure names its source


def test_every_table1_setup_prints_its_planned_time_ratio_beside_the_papers():
    table = time_ratios().splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == [
        "| `ds-1.5b-math`", "| `qwen-1.5b-dapo`", "| `qwen-1.5b-math`", "| `qwen-7b-dapo`", "| `qwen-7b-math`"]
    math_1_5b = table[4].split(" | ")
    assert math_1_5b[4] == "8.53 / 2.05" and math_1_5b[5] == "0.240 |"  # the paper's (v2 Table 1)
    assert 0.125 < float(math_1_5b[3]) < 0.5


@pytest.mark.slow
def test_the_gpu_script_runs_its_phases_at_a_tiny_shape_on_the_cpu():
    out = subprocess.run([sys.executable, "bench/gpu_paper_shape.py", "--tiny", "--engine", "hf", "--prompts", "2"],
                         cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
                         check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "seconds" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| generation (HF, bf16 autocast)", "| old log-probs",
                                                     "| update (one optimizer mini-batch)"]
