"""The paper's setups: each resolves to the paper's settings (arXiv 2510.00977 v2 App. C.1, v3 App. D.1 and §5.2),
params.yaml is the composition of conf/, and each setup runs end to end (a dry run: real dvc, real loaders on excerpts
of the real benchmark files, a tiny random-init model saved in the hub's format standing in for the hub model, one
generation step)."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.fixtures import BENCHMARKS, run
from tools.setups import compose, setup_names
from twogrpo.mathdata import DAPO_PREFIX, DAPO_SUFFIX
from twogrpo.policy import save_random_chat_model
from twogrpo.schemas import BenchmarkResults, read_table

ROOT = Path(__file__).resolve().parents[1]
PAPER_SETUPS = [s for s in setup_names() if s != "embedded"]
THREADS = "runtime.threads=1"  # a torch thread per stage: the dry runs share the cores with the other tests (xdist)
MODELS = {"qwen-1.5b": "Qwen/Qwen2.5-Math-1.5B", "qwen-7b": "Qwen/Qwen2.5-Math-7B",
          "ds-1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}


def test_every_setup_of_tables_1_and_4_exists():
    assert sorted(PAPER_SETUPS) == sorted(
        [f"{m}-{d}" for m in ("qwen-1.5b", "qwen-7b") for d in ("math", "dapo")] + ["ds-1.5b-math"]
        + [f"ablation-{m}-{d}" for m in ("qwen-1.5b", "qwen-7b") for d in ("math", "dapo")])


def test_params_yaml_is_the_composition_of_conf():
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == compose([])[0], \
        "params.yaml differs from conf/: edit conf/ and regenerate it (see README)"


@pytest.mark.parametrize("setup", PAPER_SETUPS)
def test_setup_resolves_to_the_papers_settings(setup):
    raw, p = compose([f"setup={setup}"])
    print(yaml.safe_dump(raw, sort_keys=False))  # the resolved configuration, shown with pytest -s
    ablation = setup.startswith("ablation-")
    short, data = setup.removeprefix("ablation-").rsplit("-", 1)
    t = p.train
    assert p.base.model == MODELS[short]
    assert p.prepare.train_set == {"math": "math", "dapo": "dapo_math_sub"}[data] and p.prepare.train_size == 7500
    assert p.prepare.benchmarks == ("math500", "amc23", "minerva_math", "aime25", "olympiadbench")
    assert p.task.prompt_template == ("{problem} Let's think step by step and output the final answer within "
                                      "\\boxed{}.")
    assert p.task.max_new_tokens == (8192 if short == "ds-1.5b" else 4096)
    assert (t.epochs, t.generation_batch_prompts, t.warmup_gen_steps) == (10, 512, 10)
    assert t.steps_per_epoch == 14  # 7,497 or 7,500 // 512, verl's drop_last
    assert (t.clip_low, t.clip_high, t.temperature, t.top_p, t.top_k) == (0.2, 0.28, 1.0, 1.0, 0)
    # verl at the paper's time: token-mean within each micro-batch, every rollout through the update, all 7,500
    # problems reshuffled every epoch; math-verify grades.
    assert (t.adv_std, t.loss_agg, t.kl_coef, t.entropy_coef, t.ppo_epochs) == ("bessel", "micro-token-mean", 0, 0, 1)
    # Every problem of the train table: MATH's 7,497 that load (tests/test_benchmarks.py), DAPO-Math-Sub's 7,500.
    assert (t.skip_dead_groups, t.skips_dead_groups, t.micro_batch_tokens) == (False, False, 16384)
    assert t.prompts == {"math": 7497, "dapo": 7500}[data]
    assert (p.grading.reward, p.grading.metric) == ("math-verify", "math-verify")
    e = p.evaluate
    assert (e.problems, e.samples, e.temperature, e.top_p, e.top_k, e.max_new_tokens) == (0, 32, 0.7, 0.8, 20, 4096)
    shape = {name: (arm.group_size, t.prompts_per_minibatch(arm), t.lr(arm), arm.resample)
             for name, arm in t.arms.items()}
    if ablation:  # Table 4: 32 prompts per mini-batch for every G, lr 1e-6
        assert shape == {f"g{g}": (g, 32, pytest.approx(1e-6), False) for g in (2, 4, 8, 16)}
    else:  # Table 1: 512 rollouts per mini-batch; 32 x 16 at 1e-6, 256 x 2 at 8e-6
        assert shape == {"g16": (16, 32, pytest.approx(1e-6), False), "g2": (2, 256, pytest.approx(8e-6), False),
                         "g2-rs": (2, 256, pytest.approx(8e-6), True)}
    assert t.reference_arm == "g16"
    assert (p.report.paper_model, p.report.paper_train_set) == (
        {"qwen-1.5b": "Qwen-1.5B", "qwen-7b": "Qwen-7B", "ds-1.5b": "DS-1.5B"}[short],
        {"math": "MATH", "dapo": "DAPO-Math-Sub"}[data])


@pytest.mark.parametrize("setup", [s for s in PAPER_SETUPS if s.endswith("dapo")])
def test_the_dapo_prompt_option_is_dapos_own_instruction_with_verls_dapo_reward(setup):
    _, p = compose([f"setup={setup}", "prompt=dapo"])
    assert p.task.prompt_template == DAPO_PREFIX + "{problem}" + DAPO_SUFFIX
    assert (p.grading.reward, p.grading.metric) == ("verl-dapo", "verl-dapo")
    assert compose([f"setup={setup}"])[1].task.prompt_template != p.task.prompt_template  # not the default


def write_dapo_fixture(path: Path, aime: pd.DataFrame) -> None:
    """A local file in DAPO-Math-17k's hub format (the hub is unreachable here): GSM8K test problems, each row twice
    as in the hub file, plus two AIME 2025 problems that the overlap check must drop."""
    gsm = pd.read_json(BENCHMARKS / "gsm8k" / "test.jsonl", lines=True).head(60)
    problems = [(q, a.rsplit("####", 1)[1].strip().replace(",", ""))
                for q, a in zip(gsm["question"], gsm["answer"], strict=True)]
    problems += [(p, str(a)) for p, a in zip(aime["problem"][:2], aime["answer"][:2], strict=True)]
    rows = [{"data_source": "math_dapo", "prompt": [{"role": "user", "content": DAPO_PREFIX + q + DAPO_SUFFIX}],
             "ability": "MATH", "reward_model": {"ground_truth": a, "style": "rule-lm"},
             "extra_info": {"index": f"fixture-{i}"}} for i, (q, a) in enumerate(problems)]
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows + rows).to_parquet(path)




def benchmark_texts() -> list[str]:
    """Every string field of the benchmark excerpts, in file order: the corpus the stand-in model's tokenizer learns
    its merges from, so that a dry run's prompts are about as many tokens as a hub tokenizer makes of them."""
    texts = []
    for path in sorted(BENCHMARKS.rglob("*.json*")):
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        texts += [value for line in lines for value in json.loads(line).values() if isinstance(value, str)]
    return texts


@pytest.fixture(scope="module")
def dry_project(tmp_path_factory):
    """The project in a fresh git + DVC repository with Hydra on, a tiny hub-format model, and the local data root."""
    project = tmp_path_factory.mktemp("dry")
    for item in ("dvc.yaml", "params.yaml", "conf", "stages", "twogrpo", "notebooks", "data/paper", ".dvcignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / item, **(
            {"ignore": shutil.ignore_patterns("__pycache__")} if src.is_dir() else {}))
    data = tmp_path_factory.mktemp("data")
    for item in BENCHMARKS.iterdir():
        (data / item.name).symlink_to(item)
    write_dapo_fixture(data / "dapo_math_17k" / "dapo-math-17k.parquet",
                       pd.read_json(BENCHMARKS / "aime25" / "test.jsonl", lines=True))
    model = tmp_path_factory.mktemp("model") / "tiny-qwen"
    # 32,768 positions, what every setup trains with (Qwen2.5-Math raised by base.max_position_embeddings, DeepSeek's
    # own are more): the base stage then writes the same model for ds-1.5b-math as for qwen-1.5b-math, which differ
    # in nothing else at the dry-run scale, and DVC restores the second's training and evaluation from its run cache
    # instead of running them again. Raising the positions is tested in tests/test_models.py.
    save_random_chat_model(model, max_positions=32768, corpus=benchmark_texts())
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "dry run"],
                ["git", "config", "user.email", "dry@run.invalid"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["dvc", "config", "hydra.enabled", "true"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "dry run"]):
        run(cmd, project)
    return project, data, model


def on_worker_of_its_data(setup: str):
    """Under pytest-xdist the DAPO and the MATH setups run on two workers, each in its own repository, where a setup
    restores from DVC's run cache the stages it shares with the setups run before it (the same data, the same tiny
    model)."""
    return pytest.param(setup, marks=pytest.mark.xdist_group("dry-dapo" if "dapo" in setup else "dry-math"))


@pytest.mark.slow
@pytest.mark.parametrize("setup", [on_worker_of_its_data(setup) for setup in PAPER_SETUPS])
def test_dry_run_of_the_setup_end_to_end(dry_project, setup):
    project, data, model = dry_project
    run(["dvc", "exp", "run", "-n", f"dry-{setup}", "-S", f"setup={setup}", "-S", "scale=dry-run",
         "-S", f"base.model={model}", "-S", f"prepare.local_root={data}", "-S", THREADS], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["report"]["paper_model"] and params["train"]["reference_lr"] == 1e-6  # the setup's, not embedded
    sources = json.loads((project / "data/prepared/sources.json").read_text())
    assert sources["aime25"]["problems"] == 30 and len(sources["aime25"]["repairs"]) == 7
    if "dapo" in setup:
        assert len(sources["dapo_math_sub"]["benchmark_overlaps_dropped"]) == 2
        assert sources["dapo_math_sub"]["duplicates_dropped"] == 62
    else:
        assert sources["math"]["problems"] == 49 - 2 and len(sources["math"]["rejected"]) == 2  # the excerpt's files
    base = json.loads((project / "metrics/base.json").read_text())
    assert base["path"] == str(model) and len(base["sha256"]) == 64
    bench = read_table(project / "results/benchmarks.csv", BenchmarkResults)
    assert set(bench["benchmark"]) == {"math500", "amc23", "minerva_math", "aime25", "olympiadbench"}
    assert set(bench["arm"]) == {"base", *params["train"]["arms"]} and (bench["problems"] == 4).all()
    html = (project / "reports/report.html").read_text()
    assert "Table 1 layout" in html and params["report"]["paper_model"] in html
    assert re.search(r"Δ 2-GRPO[^<]* - 16-GRPO", html)  # the paper's own rows and difference beside ours


@pytest.mark.slow
@pytest.mark.xdist_group("dry-dapo")
def test_dry_run_of_a_dapo_setup_with_verls_dapo_prompt_and_reward(dry_project):
    """-S prompt=dapo end to end: rollouts prompted with DAPO's instruction, rewarded and graded by verl's DAPO rule;
    the samples graded by every grader."""
    project, data, model = dry_project
    run(["dvc", "exp", "run", "-n", "dry-dapo-prompt", "-S", "setup=qwen-1.5b-dapo", "-S", "prompt=dapo", "-S",
         "scale=dry-run", "-S", f"base.model={model}", "-S", f"prepare.local_root={data}", "-S", THREADS], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["grading"]["reward"] == "verl-dapo" and params["task"]["prompt_template"].startswith(DAPO_PREFIX)
    metrics = json.loads((project / "eval/g16-s0/metrics.json").read_text())
    assert metrics["grader"] == "verl-dapo" and set(metrics["mean_at_k_by_grader"]) == {
        "math-verify", "verl-math", "verl-dapo"}
    claims = json.loads((project / "metrics/claims.json").read_text())
    assert claims["grader"] == "verl-dapo"
    assert {arm["time_mode"] for arm in claims["arms"].values()} == {"verl's full pass"}


def test_an_unknown_setup_lists_the_known_ones():
    """`dvc exp run -S setup=nope` composes through Hydra, whose error names the setups there are."""
    with pytest.raises(Exception, match="Could not find 'setup/nope'") as err:
        compose(["setup=nope"])
    assert "qwen-1.5b-math" in str(err.value) and "embedded" in str(err.value)
