"""Data parallelism: real processes under `accelerate launch` on the CPU (gloo)."""

import copy
import functools
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.fixtures import (
    ON_RESUMABLE_BASE,
    RESUMABLE,
    copy_project,
    kill_training_midway,
    new_project,
    resume_training,
    run,
    tool_env,
)
from twogrpo.distributed import Dist

ROOT = Path(__file__).resolve().parents[1]


def as_process(rank: int, world: int) -> Dist:
    dist = Dist()
    dist.rank, dist.world = rank, world
    return dist


def test_each_minibatch_is_split_into_whole_groups_and_every_prompt_goes_to_one_process():
    shares = [as_process(r, 2).share(8, 4) for r in range(2)]
    assert shares == [[0, 1, 4, 5], [2, 3, 6, 7]]  # mini-batches {0..3} and {4..7}, half of each per process
    assert sorted(shares[0] + shares[1]) == list(range(8))
    with pytest.raises(ValueError, match="do not split over 3 processes"):
        as_process(0, 3).share(8, 4)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(config: str | None, *args: str) -> None:
    """python, or `accelerate launch` with conf/accelerate/<config>.yaml."""
    env = tool_env() | {"OMP_NUM_THREADS": "1"}
    if config is None:
        cmd = [sys.executable, *args]
    else:
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
               f"conf/accelerate/{config}.yaml", "--main_process_port", str(free_port()), *args]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """The step of tests/distributed_step.py under conf/accelerate/<config>.yaml (None: one process) and `key=value`
    settings, run once per worker for each: the tests of the group "step" compare the same few runs."""
    @functools.cache
    def step(config: str | None, *changes: str) -> dict:
        out = tmp_path_factory.mktemp("step") / "step.pt"
        launch(config, "-m", "tests.distributed_step", str(out), *changes)
        return torch.load(out)
    return step


@pytest.mark.slow
@pytest.mark.xdist_group("step")
@pytest.mark.parametrize("config", ["cpu-2", "fsdp-cpu-2"])
@pytest.mark.parametrize("loss_agg", ["token-mean", "micro-token-mean"])
def test_one_step_over_two_processes_equals_one_process_on_the_same_global_batch(steps, config, loss_agg):
    """Weights replicated (DDP) or sharded (FSDP2); the loss normalised by the mini-batch's tokens, or by each
    micro-batch's (4 rollouts each: the two processes' micro-batches are the one process's, so the update is the
    same, as verl's ranks with equal micro-batches give the update of one)."""
    one, two = steps(None, f"loss_agg={loss_agg}"), steps(config, f"loss_agg={loss_agg}")
    assert two["sharded"] == config.startswith("fsdp") and not one["sharded"]
    assert any(not torch.equal(one["before"][n], one["after"][n]) for n in one["after"])  # the step did something
    for name, grad in one["grads"].items():
        # Over two processes the loss is summed in another order: equal up to float32 rounding.
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-5, atol=1e-8, msg=name)
    for name, weight in one["after"].items():
        # AdamW's first step moves each weight by lr * g / (|g| + 1e-8): by about lr (1e-2) whatever g, but where g
        # is near 1e-8 a rounding difference in g changes the move, by up to ~1e-5 measured (FSDP; DDP: 0).
        torch.testing.assert_close(two["after"][name], weight, rtol=0, atol=1e-4, msg=name)
    # The update's relative size, from each process's share of the weights added over the processes when sharded
    # (over the trained tensors: the tied output layer is the embedding, counted once).
    after = torch.cat([one["after"][name].double().flatten() for name in one["parameters"]])
    before = torch.cat([one["before"][name].double().flatten() for name in one["parameters"]])
    expected = float((after - before).norm() / after.norm())
    assert one["update_size"] == pytest.approx(expected, rel=1e-5)
    assert two["update_size"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.slow
@pytest.mark.xdist_group("step")
def test_a_sharded_bf16_step_with_a_token_budget_follows_the_float32_step(steps):
    """FSDP's bf16 mixed precision (bf16 weights gathered, float32 gradients reduced) with micro-batches by token
    budget: float32 weights and gradients, close to the one-process float32 gradient to bf16 rounding."""
    one, two = steps(None, "loss_agg=token-mean"), steps("fsdp-cpu-2", "precision=bfloat16", "micro_batch_tokens=40")
    assert two["sharded"]
    assert all(w.dtype == torch.float32 for w in two["after"].values())
    assert all(g.dtype == torch.float32 for g in two["grads"].values())
    full = torch.cat([g.flatten() for g in one["grads"].values()])
    mixed = torch.cat([two["grads"][name].flatten() for name in one["grads"]])
    assert not torch.equal(mixed, full)  # computed in bf16
    assert (mixed - full).norm() < 0.05 * full.norm()


@pytest.mark.slow
def test_processes_cut_their_rollouts_into_as_many_micro_batches_as_the_most_needs(tmp_path):
    """verl all-reduces the count of micro-batches by token budget to the largest over its ranks
    (seqlen_balancing.rearrange_micro_batches): a process with fewer tokens makes more, smaller micro-batches."""
    launch("cpu-2", "-m", "tests.distributed_step", str(tmp_path / "two.pt"), "micro_batch_tokens=20",
           "loss_agg=micro-token-mean")
    (own_0, cut_0), (own_1, cut_1) = torch.load(tmp_path / "two.pt")["micro_batch_counts"]
    assert own_0 != own_1  # the test can tell
    assert cut_0 == cut_1 == max(own_0, own_1)


@pytest.mark.slow
@pytest.mark.xdist_group("step")
@pytest.mark.parametrize("config", ["cpu-2", "fsdp-cpu-2"])
def test_balance_batch_gives_each_process_an_equal_share_of_rollouts_and_tokens_and_the_same_update(steps, config):
    """verl's balance_batch repartitions the generation batch over the processes (groups split, advantages computed
    whole first): equally many rollouts each, tokens within one rollout of even; under token-mean the update is the
    one process's."""
    one, plain = steps(None, "loss_agg=token-mean"), steps(config, "loss_agg=token-mean")
    two = steps(config, "loss_agg=token-mean", "balance_batch=true")
    (n0, tokens0), (n1, tokens1) = two["shares"]
    assert n0 == n1 == 16
    (_, plain0), (_, plain1) = plain["shares"]
    assert abs(tokens0 - tokens1) < abs(plain0 - plain1)  # the test can tell: the shares were rebalanced
    assert abs(tokens0 - tokens1) <= 14  # the longest rollout here: 8 prompt + 6 response tokens
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-5, atol=1e-8, msg=name)


@pytest.mark.slow
def test_evaluation_over_two_processes_gives_the_records_of_one_process(tmp_path):
    launch(None, "-m", "tests.distributed_eval", str(tmp_path / "one.parquet"))
    launch("cpu-2", "-m", "tests.distributed_eval", str(tmp_path / "two.parquet"))
    one, two = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    assert len(one) == 22 * 4 and one["completion"].nunique() > 10  # sampled, not all alike
    pd.testing.assert_frame_equal(two, one)


def two_processes(params: dict) -> dict:
    """`params` with every stage that trains started under `accelerate launch` on two CPU processes."""
    params = copy.deepcopy(params)
    params["runtime"]["launch"] = (f"accelerate launch --config_file conf/accelerate/cpu-2.yaml "
                                   f"--main_process_port {free_port()}")
    return params


@pytest.fixture(scope="module")
def two_process_run(resumable_base, tmp_path_factory):
    """The resumable study's 2-GRPO run trained by `dvc repro` under `accelerate launch` with two processes,
    uninterrupted: what two tests of the group "resumable" read (one worker builds it once)."""
    project = copy_project(resumable_base, tmp_path_factory.mktemp("two-process") / "study", two_processes(RESUMABLE))
    run(["dvc", "repro", "train@g2-0"], project)
    return project


@pytest.mark.slow
@ON_RESUMABLE_BASE
def test_the_train_and_evaluate_stages_under_accelerate_launch_with_two_processes(tmp_path, two_process_run):
    """`dvc repro` runs the train stage, which starts itself under `accelerate launch` (runtime.launch): two processes
    share every mini-batch, and the first writes one ledger, one dvclive log and one model. The evaluate stage
    (runtime.eval_launch) writes the records one process writes."""
    params = two_processes(RESUMABLE)
    params["runtime"]["eval_launch"] = params["runtime"]["launch"]
    project = copy_project(two_process_run, tmp_path / "study", params)
    repro = run(["dvc", "repro", "evaluate@g2-0"], project)
    assert "Stage 'train@g2-0' didn't change" in repro  # trained by the fixture: runtime.* reruns nothing
    shared = pd.read_parquet(project / "eval/g2-s0/generations.parquet")
    params["runtime"]["eval_launch"] = "python"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_status = run(["dvc", "status", "evaluate@g2-0"], project)  # runtime.* reruns nothing...
    run(["dvc", "repro", "--force", "--single-item", "evaluate@g2-0"], project)  # ...so force it, in one process
    assert "up to date" in dvc_status
    pd.testing.assert_frame_equal(shared, pd.read_parquet(project / "eval/g2-s0/generations.parquet"))
    ledger = pd.read_parquet(project / "runs/g2-s0/steps.parquet")
    last = ledger.iloc[-1]
    # Every prompt once (64 prompts, one epoch) and G rollouts each, over both processes together.
    assert (last["prompts_seen"], last["rollouts"], last["gen_step"]) == (64, 128, 8)
    assert last["opt_steps"] == 8 * 2  # 2 mini-batches of 4 prompts per step, counted once, not once per process
    assert ledger["eval_accuracy"].notna().all()  # the first process evaluated every step
    assert json.loads((project / "runs/g2-s0/live/metrics.json").read_text())["train"]["rollouts"] == 128
    assert (project / "models/g2-s0/model.safetensors").exists()


@pytest.mark.slow
@ON_RESUMABLE_BASE
def test_resampling_over_two_processes_refills_dead_groups_within_the_budget(tmp_path, resumable_base):
    """2-GRPO+RS over two processes: dead groups of both are refilled from one shared stream, within 16-GRPO's
    (here 4-GRPO's) rollout budget; the refilled batch then rebalanced over the processes (balance_batch)."""
    params = two_processes(RESUMABLE)
    params["train"] |= {"arms": {"g4": {"group_size": 4, "lr_scaling": "linear"},
                                 "g2-rs": {"group_size": 2, "lr_scaling": "none", "resample": True}},
                        "reference_group_size": 4, "balance_batch": True}
    project = copy_project(resumable_base, tmp_path / "study", params)
    run(["dvc", "repro", "train@g2-rs-0"], project)
    last = pd.read_parquet(project / "runs/g2-rs-s0/steps.parquet").iloc[-1]
    assert 64 * 2 < last["rollouts"] <= 64 * 4  # refills happened, within the reference arm's budget
    assert last["prompts_seen"] == 64 + (last["rollouts"] - 64 * 2) / 2  # each refill is one more prompt
    assert last["dead_group_frac"] < 1


@pytest.mark.slow
@ON_RESUMABLE_BASE
def test_a_killed_two_process_training_resumes_and_matches_an_uninterrupted_one(tmp_path, resumable_base,
                                                                                two_process_run):
    """SIGKILL the launcher and both processes mid-run; the rerun resumes each process from its saved RNG state and
    ends with the weights of an uninterrupted 2-process run."""
    project = copy_project(resumable_base, tmp_path / "killed", two_processes(RESUMABLE))
    resume_training(project, kill_training_midway(project))
    expected = (two_process_run / "models/g2-s0/model.safetensors").read_bytes()
    assert (project / "models/g2-s0/model.safetensors").read_bytes() == expected


@pytest.mark.slow
def test_sharded_training_matches_replicated_training_and_resumes_after_a_kill(tmp_path):
    """The train stage with FSDP (fsdp-cpu-2.yaml) against DDP (cpu-2.yaml), both on 2 processes with the same
    seeds: 2-GRPO+RS (refill rounds in which a process may have nothing to generate), dead groups skipped (unequal
    micro-batches), evaluation chunks shared unequally (22 problems) - the padded collectives sample what replicated
    weights sample. The sharded run is killed mid-way and resumed from its gathered checkpoint."""
    params = copy.deepcopy(RESUMABLE)
    params["train"] |= {"arms": {"g2": {"group_size": 2, "lr_scaling": "linear", "resample": True},
                                 "g4": {"group_size": 4, "lr_scaling": "linear"}},  # the reference; not trained here
                        "reference_group_size": 4, "eval_problems": 22}
    params["prepare"]["chain_sum"]["n_validation"] = 22  # the in-training evaluation reads validation problems
    built = new_project(tmp_path / "built", params)
    run(["dvc", "repro", "base"], built)  # one base for both runs
    runs = {}
    for config in ("cpu-2", "fsdp-cpu-2"):
        params["runtime"]["launch"] = (f"accelerate launch --config_file conf/accelerate/{config}.yaml "
                                     f"--main_process_port {free_port()}")
        project = copy_project(built, tmp_path / config, params)
        if config == "cpu-2":
            run(["dvc", "repro", "train@g2-0"], project)
        else:
            resume_training(project, kill_training_midway(project))
        runs[config] = project
    replicated, sharded = (pd.read_parquet(runs[c] / "runs/g2-s0/steps.parquet") for c in ("cpu-2", "fsdp-cpu-2"))
    assert replicated["rollouts"].iloc[-1] > 64 * 2  # dead groups were refilled
    same = ["gen_step", "prompts_seen", "rollouts", "tokens", "opt_steps", "mean_reward", "dead_group_frac",
            "eval_accuracy"]
    pd.testing.assert_frame_equal(sharded[same], replicated[same])
    pd.testing.assert_series_equal(sharded["grad_norm"], replicated["grad_norm"], rtol=1e-4)
    weights = [load_file(runs[c] / "models/g2-s0/model.safetensors") for c in ("cpu-2", "fsdp-cpu-2")]
    assert weights[0].keys() == weights[1].keys()
    for name, weight in weights[0].items():
        torch.testing.assert_close(weights[1][name], weight, rtol=0, atol=1e-5, msg=name)  # measured: equal


@pytest.mark.parametrize("env, message", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed is not supported"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, "fsdp_cpu_ram_efficient_loading"),
])
def test_accelerate_settings_the_trainer_does_not_implement_stop_with_a_clear_error(monkeypatch, env, message):
    for name, value in {"WORLD_SIZE": "2", **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=message):
        Dist.from_environment()


CONFIGS = {  # name: (processes, machines, distributed_type)
    "gpus-1": (1, 1, "NO"), "gpus-4": (4, 1, "MULTI_GPU"), "gpus-8": (8, 1, "MULTI_GPU"),
    "nodes-2x8": (16, 2, "MULTI_GPU"), "cpu-2": (2, 1, "MULTI_GPU"), "fsdp-gpus-4": (4, 1, "FSDP"),
    "fsdp-gpus-8": (8, 1, "FSDP"), "fsdp-nodes-2x8": (16, 2, "FSDP"), "fsdp-cpu-2": (2, 1, "FSDP")}


def test_every_accelerate_config_parses_and_asks_for_what_the_trainer_runs():
    from accelerate.commands.config.config_args import load_config_from_file

    assert sorted(p.stem for p in (ROOT / "conf/accelerate").glob("*.yaml")) == sorted(CONFIGS)
    for name, (processes, machines, kind) in CONFIGS.items():
        config = load_config_from_file(str(ROOT / f"conf/accelerate/{name}.yaml"))
        assert (config.num_processes, config.num_machines) == (processes, machines), name
        assert config.distributed_type.value == kind, name
        if kind == "FSDP":  # what Dist.from_environment accepts
            assert config.fsdp_config == {"fsdp_version": 2, "fsdp_reshard_after_forward": True,
                                          "fsdp_offload_params": False, "fsdp_cpu_ram_efficient_loading": False}


FAILS_ON_RANK_1 = """
import os, runpy, sys, time
import twogrpo.trainer as trainer
update, updates = trainer.update_on_batch, []
def update_that_fails_on_rank_1(*args, **kwargs):
    updates.append(1)
    if os.environ["RANK"] == "1" and len(updates) == 3:
        print(f"rank 1 raises at {time.time()}", flush=True)
        raise RuntimeError("rank 1: out of memory (a failure of one process)")
    return update(*args, **kwargs)
trainer.update_on_batch = update_that_fails_on_rank_1
sys.argv = ["stages.train", "--arm", "g2", "--seed", "0"]
runpy.run_module("stages.train", run_name="__main__")
"""


@pytest.mark.slow
@ON_RESUMABLE_BASE
def test_when_one_process_fails_the_other_stops_within_seconds(tmp_path, resumable_base):
    """The train stage over two processes, rank 1 raising in its third update while rank 0 goes on to the next
    collective: gloo reports the closed connection, the launcher stops rank 0, and the launch ends within seconds
    (not at the collective's timeout), with rank 1's error and no output written."""
    project = copy_project(resumable_base, tmp_path / "study")
    (project / "fails_on_rank_1.py").write_text(FAILS_ON_RANK_1)
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", "conf/accelerate/cpu-2.yaml",
           "--main_process_port", str(free_port()), "fails_on_rank_1.py"]
    done = subprocess.run(cmd, cwd=project, env=tool_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    ended = time.time()
    raised = [float(line.split()[-1]) for line in done.stdout.splitlines() if line.startswith("rank 1 raises at")]
    assert done.returncode != 0 and len(raised) == 1, done.stderr[-3000:]
    assert "rank 1: out of memory (a failure of one process)" in done.stderr
    assert ended - raised[0] < 30
    assert not (project / "models/g2-s0").exists() and not (project / "runs/g2-s0").exists()
