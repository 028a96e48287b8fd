"""params.yaml loading: the committed file loads, bad values stop with a message naming the key and value."""

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from twogrpo.config import ArmConfig, ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_committed_params_load_and_derive_the_arms():
    p = load_params(ROOT / "params.yaml")
    t = p.train
    g16, g2 = t.arms["g16"], t.arms["g2-tuned"]
    assert t.prompts_per_minibatch(g16) * 16 == t.prompts_per_minibatch(g2) * 2 == t.rollouts_per_minibatch
    assert t.lr(g16) == t.reference_lr and t.lr(g2) == 4 * t.reference_lr  # the grid's choice for 2-GRPO
    assert t.lr(ArmConfig(2, "linear")) == pytest.approx(8 * t.reference_lr)  # the paper's linear rule


def test_the_paper_budget_gives_the_paper_learning_rates(raw, tmp_path):
    raw["prepare"]["train_size"] = 7500
    raw["train"] |= {"rollouts_per_minibatch": 512, "generation_batch_prompts": 512, "prompts": 7500,
                     "reference_lr": 1.0e-6}
    t = load_params(write(tmp_path, raw)).train
    assert t.prompts_per_minibatch(ArmConfig(16, "linear")) == 32
    assert t.prompts_per_minibatch(ArmConfig(2, "linear")) == 256
    assert t.lr(ArmConfig(2, "linear")) == pytest.approx(8e-6)
    assert t.lr(ArmConfig(2, "sqrt")) == pytest.approx(8 ** 0.5 * 1e-6)  # x2.83, the square-root rule
    assert t.lr(ArmConfig(16, "sqrt")) == t.lr(ArmConfig(16, "none")) == 1e-6
    assert t.lr(ArmConfig(2, "none", lr_factor=2.0)) == pytest.approx(2e-6)  # a tuned ratio (the ladder's grid)
    assert t.lr(ArmConfig(2, "linear", lr_factor=0.5)) == pytest.approx(4e-6)
    assert (t.steps_per_epoch, t.prompts_per_epoch) == (14, 7168)  # verl's drop_last
    # Table 4's ablation: 32 prompts per mini-batch whatever G, so every G trains at the reference 1e-6.
    for g in (2, 4, 8, 16):
        ablation = ArmConfig(g, "linear", prompts_per_minibatch=32)
        assert t.prompts_per_minibatch(ablation) == 32 and t.lr(ablation) == pytest.approx(1e-6)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["train"].update(learning_rate=1), "unknown key train.learning_rate"),
    (lambda r: r.update(extra={}), "unknown key extra"),
    (lambda r: r["train"].pop("epochs"), "missing key train.epochs"),
    (lambda r: r["train"].update(epochs="ten"), "train.epochs='ten': expected int"),
    (lambda r: r["train"].update(epochs=1.5), "train.epochs=1.5: expected int"),
    (lambda r: r["train"].update(seeds=3), "train.seeds=3: expected a list"),
    (lambda r: r["train"].update(epochs=0), "train.epochs=0 must be >= 1"),
    (lambda r: r["train"].update(prompts=-8), "train.prompts=-8 must be >= 1"),
    (lambda r: r["train"]["arms"]["g2-tuned"].update(group_size=1),
     "train.arms.g2-tuned.group_size=1 must be >= 2"),
    (lambda r: r["train"]["arms"]["g2-tuned"].update(group_size=3),
     "rollouts_per_minibatch=128 is not divisible by train.arms.g2-tuned.group_size=3"),
    (lambda r: r["train"]["arms"]["g2-tuned"].update(lr_scaling="cubic"), "train.arms.g2-tuned.lr_scaling='cubic'"),
    (lambda r: r["train"]["arms"]["g2-tuned"].update(lr_factor=0), "train.arms.g2-tuned.lr_factor=0"),
    (lambda r: r["train"]["arms"]["g2-tuned"].update(optimizer="adam"), "train.arms.g2-tuned.optimizer='adam'"),
    (lambda r: r["train"].update(generation_batch_prompts=96, prompts=960),
     "generation_batch_prompts=96 is not divisible into mini-batches of 64 prompts"),
    (lambda r: r["train"].update(prompts=100), "train.prompts=100 is fewer than one generation batch"),
    (lambda r: r["train"].update(skip_dead_groups=True), "train.skip_dead_groups=true with train.loss_agg=micro-token"),
    (lambda r: r["grading"].update(reward="sympy"), "grading.reward='sympy': expected one of"),
    (lambda r: r["grading"].update(reward="verl-dapo"), "grading.reward=verl-dapo reads an \"Answer:\" line"),
    (lambda r: r["grading"].update(evaluation="exact"), "grading.evaluation='exact': expected one of"),
    (lambda r: r["base"].update(num_heads=8), "head_dim = hidden_size/num_heads = 16"),
    (lambda r: r["task"].update(prompt_template="Solve:"), "must contain '{problem}'"),
    (lambda r: r["evaluate"].update(problems=10_000), "evaluate.problems=10000 > prepare.chain_sum.n_test=500"),
    (lambda r: r["prepare"].update(benchmarks=["math500"]), "the chain sums are trained and evaluated only together"),
    (lambda r: r["prepare"].update(benchmarks=["mmlu"]), "unknown benchmark 'mmlu'"),
    (lambda r: r["train"].update(eval_benchmark="math500"), "train.eval_benchmark='math500' is not in"),
    (lambda r: r["prepare"].update(train_set="math", benchmarks=["math500"]) or r["train"].update(
        eval_benchmark="math500"), "base.model=scratch trains the tiny"),
    (lambda r: r["prepare"]["sources"].pop("amc23") and r["prepare"].update(train_set="math", benchmarks=["amc23"])
     or r["train"].update(eval_benchmark="amc23"), "prepare.sources has no entry for 'amc23'"),
    # Numbers out of their meaning, non-finite numbers, sizes beyond what can finish.
    (lambda r: r["train"].update(warmup_gen_steps=-1), "train.warmup_gen_steps=-1 must be >= 0"),
    (lambda r: r["train"].update(top_p=1.5), "train.top_p=1.5 must be in (0, 1]"),
    (lambda r: r["evaluate"].update(top_p=0.0), "evaluate.top_p=0.0 must be in (0, 1]"),
    (lambda r: r["evaluate"].update(temperature=float("inf")), "evaluate.temperature=inf: must be a finite number"),
    (lambda r: r["evaluate"].update(temperature=-0.5), "evaluate.temperature=-0.5 must be >= 0"),
    (lambda r: r["train"].update(temperature=0.0), "train.temperature=0.0 must be > 0"),
    (lambda r: r["train"].update(reference_lr=float("nan")), "train.reference_lr=nan: must be a finite number"),
    (lambda r: r["train"].update(reference_lr="nan"), "train.reference_lr=nan: must be a finite number"),
    (lambda r: r["train"].update(clip_low=1.0), "train.clip_low=1.0 must be in (0, 1)"),
    (lambda r: r["train"].update(clip_ratio_c=1.0), "train.clip_ratio_c=1.0 must be > 1"),
    (lambda r: r["train"].update(adv_eps=0.0), "train.adv_eps=0.0 must be > 0"),
    (lambda r: r["train"].update(kl_coef=-0.1), "train.kl_coef=-0.1 must be >= 0"),
    (lambda r: r["base"].update(target_accuracy=1.2), "base.target_accuracy=1.2 must be in (0, 1]"),
    (lambda r: r["rollout"].update(vllm_memory_utilization=0), "rollout.vllm_memory_utilization=0.0 must be in (0, 1]"),
    (lambda r: r["report"].update(equivalence_margin=-0.02), "report.equivalence_margin=-0.02 must be in (0, 1]"),
    # Read as points, a margin is refused with its unit named.
    (lambda r: r["report"].update(equivalence_margin=3),
     "report.equivalence_margin=3.0 must be in (0, 1] (a fraction: 0.02 = 2 points)"),
    (lambda r: r["train"].update(seeds=[0, -1]), "train.seeds[1]=-1 must be in [0, 2147483647]"),
    (lambda r: r["train"].update(epochs=10**6), "train.epochs=1000000 exceeds the limit 1000"),
    (lambda r: r["evaluate"].update(samples=100_000), "evaluate.samples=100000 exceeds the limit 1024"),
    (lambda r: r["task"].update(max_new_tokens=10**7), "task.max_new_tokens=10000000 exceeds the limit 131072"),
    (lambda r: r["base"].update(hidden_size=1 << 20), "base.hidden_size=1048576 exceeds the limit 16384"),
    (lambda r: r["runtime"].update(checkpoint_every=-2), "runtime.checkpoint_every=-2 must be >= 0"),
    (lambda r: r["prepare"].update(train_size=5000) or r["prepare"]["chain_sum"].update(
        min_terms=2, max_terms=2, min_digits=1, max_digits=1), "n_validation = 7500 distinct problems, but"),
    (lambda r: r["task"].update(max_new_tokens=4096), "task.max_new_tokens=4096 leaves no room for a prompt in the "
                                                      "tiny model's 128 positions"),
    # Names, seeds and the reference arm.
    (lambda r: r["train"].update(seeds=[0, 0]), "train.seeds=[0, 0]: seed 0 appears twice"),
    (lambda r: r["train"].update(reference_group_size=4), "train.reference_group_size=4: train.arms has no arm"),
    # Numbers inside their ranges that would break the run, and settings that would measure nothing.
    (lambda r: r["train"].update(reference_lr=1000.0), "train.reference_lr=1000.0 must be in (0, 0.1]"),
    (lambda r: r["train"].update(reference_lr=0.05) or r["train"]["arms"]["g2-tuned"].update(lr_scaling="linear"),
     "train.arms.g2-tuned: lr 1.6 (train.reference_lr=0.05, lr_scaling linear, lr_factor 4) exceeds 0.1"),
    (lambda r: r["train"]["arms"]["g2-tuned"].update(optimizer="sgd", lr_factor=1e6),  # SGD's own bound, not AdamW's
     "train.arms.g2-tuned: lr 12.5 (train.reference_lr=1.25e-05, lr_scaling none, lr_factor 1e+06) exceeds 10: an SGD "
     "update moves the weights too far"),
    (lambda r: r["train"].update(micro_batch_tokens=1), "train.micro_batch_tokens=1 cannot hold one prompt"),
    (lambda r: r["grading"].update(evaluation="verl-dapo"), "grading.evaluation=verl-dapo reads an \"Answer:\" line"),
    (lambda r: r["prepare"].update(train_set="math", benchmarks=["math500", "math500"]) or r["train"].update(
        eval_benchmark="math500") or r["base"].update(model="Qwen/Qwen2.5-Math-1.5B"),
     "prepare.benchmarks=['math500', 'math500']: math500 appears twice"),
    (lambda r: r["runtime"].update(gpus=0, launch="accelerate launch --config_file conf/accelerate/gpus-4.yaml"),
     "runtime.gpus=0 but runtime.launch='accelerate launch --config_file conf/accelerate/gpus-4.yaml' starts "
     "processes on GPUs"),
    (lambda r: r["train"]["arms"].update({"g2;touch_PWNED": r["train"]["arms"]["g2-tuned"]}),
     "train.arms.g2;touch_PWNED: an arm name must be"),
    (lambda r: r["train"]["arms"].update({"g 2": r["train"]["arms"]["g2-tuned"]}),
     "train.arms.g 2: an arm name must be"),
    (lambda r: r["train"]["arms"].update({"base": r["train"]["arms"]["g2-tuned"]}), "and not 'base'"),
    (lambda r: r["base"].update(model="/nonexistent"), "base.model='/nonexistent': no such folder"),
    (lambda r: r["base"].update(model="params.yaml"), "base.model='params.yaml' is a file"),
])
def test_bad_params_name_the_key_and_value(raw, tmp_path, edit, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    edit(raw)
    with pytest.raises(ParamsError, match=None) as err:
        load_params(write(tmp_path, raw))
    assert message in str(err.value)


def test_the_reference_arm_is_found_or_its_absence_named():
    t = load_params(ROOT / "params.yaml").train
    assert t.reference_arm == "g16"
    without = dataclasses.replace(t, arms={k: v for k, v in t.arms.items() if k != "g16"})
    with pytest.raises(ParamsError, match="train.reference_group_size=16: train.arms has no arm"):
        _ = without.reference_arm


def test_unknown_arm_is_named():
    with pytest.raises(ParamsError, match="unknown arm 'g3'"):
        load_params(ROOT / "params.yaml").train.arm("g3")


def test_every_dataset_name_the_params_accept_has_a_loader():
    from twogrpo.choices import REAL_DATASETS
    from twogrpo.mathdata import NORMALISERS
    assert set(NORMALISERS) == set(REAL_DATASETS)


def test_every_number_has_a_range():
    """Every int and float of params.yaml is Annotated with a Range: a new key cannot skip the range check."""
    import typing

    from twogrpo.config import Params, Range

    def numbers_without_range(cls, where=""):
        for name, hint in typing.get_type_hints(cls, include_extras=True).items():
            args = typing.get_args(hint)
            if typing.get_origin(hint) is typing.Annotated:
                assert any(isinstance(a, Range) for a in args[1:]), f"{where}{name}"
                continue
            if dataclasses.is_dataclass(hint):
                yield from numbers_without_range(hint, f"{where}{name}.")
            elif hint in (int, float) or any(a in (int, float) for a in args):
                yield f"{where}{name}"
            for arg in args:
                if dataclasses.is_dataclass(arg):
                    yield from numbers_without_range(arg, f"{where}{name}.*.")

    assert list(numbers_without_range(Params)) == []


def test_greedy_evaluation_takes_one_sample_per_problem(raw, tmp_path):
    raw["evaluate"]["temperature"] = 0  # both engines sample greedily at 0
    with pytest.raises(ParamsError, match="the evaluate.samples=8 samples of a problem would all be equal"):
        load_params(write(tmp_path, raw))
    raw["evaluate"]["samples"] = 1
    with pytest.raises(ParamsError, match="set train.eval_samples=1"):
        load_params(write(tmp_path, raw))
    raw["train"]["eval_samples"] = 1
    assert load_params(write(tmp_path, raw)).evaluate.temperature == 0.0


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in this environment")
def test_the_validate_stage_refuses_the_vllm_engine_where_vllm_is_not_installed(tmp_path):
    """Before any stage works (the base SFT would otherwise run first, then training fail)."""
    import subprocess
    import sys

    from tests.fixtures import tiny_params

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(rollout={"engine": "vllm"})))
    result = subprocess.run([sys.executable, "-m", "stages.validate"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode != 0 and "rollout.engine=vllm but vLLM is not installed" in result.stderr
    assert not (tmp_path / "data").exists()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    subprocess.run([sys.executable, "-m", "stages.validate"], cwd=tmp_path, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert json.loads((tmp_path / "data/validated.json").read_text()) == {"params.yaml": "valid"}


def test_a_conf_file_that_is_not_utf8_is_named_with_the_line(tmp_path):
    from tools.setups import check_conf_text

    (tmp_path / "setup").mkdir()
    (tmp_path / "setup" / "mine.yaml").write_bytes(b"# @package _global_\ntrain:\n  epochs: 1 # caf\xe9\n")
    with pytest.raises(ValueError, match=r"setup/mine.yaml, line 3, column 18: not UTF-8 \(byte 0xe9\)"):
        check_conf_text(tmp_path)
    check_conf_text()  # the project's own conf/ reads


def _leaf_keys(mapping: dict, where: str = "") -> list[str]:
    """Dotted keys of a params mapping's values; an arm and a dataset source are described by their dataclasses."""
    keys = []
    for key, value in mapping.items():
        dotted = f"{where}{key}"
        if isinstance(value, dict) and dotted not in ("train.arms", "prepare.sources"):
            keys += _leaf_keys(value, f"{dotted}.")
        else:
            keys.append(dotted)
    return keys


def test_every_setting_has_one_meaning_written_beside_its_default_in_conf():
    """A setting added without a comment in conf/config.yaml fails here; so does a comment left for a removed one."""
    from tools.settings import CONF, documented_keys

    documented = documented_keys(CONF.read_text())
    # train.arms is the `arms` config group's choice (documented with the choices), each arm's keys ArmConfig's.
    params = [key for key in _leaf_keys(yaml.safe_load((ROOT / "params.yaml").read_text())) if key != "train.arms"]
    assert [key for key in params if not documented.get(key)] == []
    settings = {key for key in documented if not key.startswith("defaults.")}
    parents = {key.rsplit(".", i)[0] for key in params for i in range(1, key.count("."))}
    assert sorted(settings - set(params) - parents) == []


def test_the_settings_page_is_generated_from_conf():
    from tools.settings import CONF, PAGE, page

    assert PAGE.read_text() == page(CONF.read_text()), "docs/settings.md is stale: run python -m tools.settings"
