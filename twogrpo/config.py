"""Typed, strict view of params.yaml: one frozen dataclass per section.

Unknown keys, wrong types, numbers out of their Range (non-finite ones included) and inconsistent sizes raise
ParamsError naming the key and value, before any work starts (the `validate` stage runs this first in dvc.yaml).
Derived values (prompts per mini-batch, the learning rate of an arm) are properties, never separate YAML keys.

The dataclasses hold each key's type, range and rules; its meaning is written once, in the comment beside its default
in conf/config.yaml (docs/settings.md is generated from those comments). The keys of an arm (ArmConfig) and of a
dataset source (SourceConfig), which conf/ sets in other files, are described here.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml

from twogrpo import launch as launches
from twogrpo.choices import BENCHMARKS, REAL_DATASETS, AdvStd, Grader, LossAgg, Optimizer

PARAMS_FILE = Path("params.yaml")


class ParamsError(ValueError):
    """A params.yaml value is unknown, of the wrong type, out of its range, or inconsistent with another."""


@dataclass(frozen=True)
class Range:
    """The values a number may take (always finite): from `low` (excluded when open_low) to `high` (excluded when
    open_high), the bounds of its meaning; `limit` caps a size at what can finish in reasonable time (a run beyond it
    is refused rather than left to run for days; raise it here if you mean it)."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    limit: float = math.inf
    unit: str = ""  # how the number reads, named in the refusal ("a fraction: 0.02 = 2 points")

    def check(self, key: str, value: float) -> None:
        if not math.isfinite(value):
            raise ParamsError(f"{key}={value}: must be a finite number")
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        if not (above and below):
            raise ParamsError(f"{key}={value} must be {self}" + (f" ({self.unit})" if self.unit else ""))
        if value > self.limit:
            raise ParamsError(f"{key}={value} exceeds the limit {_number(self.limit)}: a run of this size would not "
                              f"finish in reasonable time (twogrpo/config.py sets the limits)")

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {low}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Every number in params.yaml has a Range (tests/test_config.py checks that none lacks one).
Positive = Annotated[float, Range(0, open_low=True)]
MAX_LR = 0.1  # a learning rate above it makes AdamW diverge at any scale here (train.reference_lr=1000: NaN)
# Plain SGD moves the weights by the rate times the gradient (clipped at train.grad_clip, 1.0): at 10, up to a sixth of
# the 0.6M model's weight norm (63) in one update.
MAX_SGD_LR = 10.0
LearningRate = Annotated[float, Range(0, MAX_LR, open_low=True)]
NonNegative = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1, open_low=True)]
Seed = Annotated[int, Range(0, 2**31 - 1)]  # numpy's seed range, less room for the per-process offsets
Tokens = Annotated[int, Range(1, limit=131_072)]  # response tokens (the paper: 4,096 and 8,192)
Samples = Annotated[int, Range(1, limit=1024)]  # samples per problem (the paper: 32)
TopK = Annotated[int, Range(0, limit=1_000_000)]  # 0 = off
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # `name` or `owner/name` on the hub
# Arm names reach paths and DVC stage names and commands (`--arm <name>`): letters, digits, - and _ only.
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


@dataclass(frozen=True)
class ChainSumConfig:
    """The embedded task: arithmetic chains generated offline (reasoning-gym `chain_sum`)."""

    n_test: Annotated[int, Range(1, limit=1_000_000)]
    n_validation: Annotated[int, Range(1, limit=1_000_000)]
    min_terms: Annotated[int, Range(2, limit=100)]
    max_terms: Annotated[int, Range(2, limit=100)]
    min_digits: Annotated[int, Range(1, limit=30)]
    max_digits: Annotated[int, Range(1, limit=30)]

    def check(self) -> None:
        if self.max_terms < self.min_terms:
            raise ParamsError(f"prepare.chain_sum.max_terms={self.max_terms} < min_terms={self.min_terms}")
        if self.max_digits < self.min_digits:
            raise ParamsError(f"prepare.chain_sum.max_digits={self.max_digits} < min_digits={self.min_digits}")

    @property
    def distinct_bound(self) -> int:
        """More than the distinct expressions these settings can draw: any number of up to max_digits digits in each
        term, + or - between terms."""
        return sum((10 ** self.max_digits) ** terms * 2 ** (terms - 1)
                   for terms in range(self.min_terms, self.max_terms + 1))


@dataclass(frozen=True)
class SourceConfig:
    """Where a real dataset is read from: the hub (id, config, split, revision) or a local file in its original
    layout, prepare.local_root / local (JSON lines, JSON, parquet, or MATH's one-file-per-problem folder)."""

    hub: str  # dataset id on the hub
    config: str  # the hub dataset's config name; "" for its default
    split: str
    revision: str  # a commit hash pins it; a branch ("main") follows the hub, and the stage logs the commit it read
    local: str  # path under prepare.local_root


@dataclass(frozen=True)
class PrepareConfig:
    """The training set and the benchmarks: the embedded chain sums, or the paper's data (MATH / DAPO-Math-Sub)."""

    seed: Seed
    train_set: Literal["chain_sum", "math", "dapo_math_sub"]
    train_size: Annotated[int, Range(1, limit=1_000_000)]
    benchmarks: tuple[str, ...]
    local_root: str
    sources: dict[str, SourceConfig]
    chain_sum: ChainSumConfig

    def check(self) -> None:
        self.chain_sum.check()
        wanted = self.train_size + self.chain_sum.n_test + self.chain_sum.n_validation
        if self.train_set == "chain_sum" and wanted > self.chain_sum.distinct_bound:
            raise ParamsError(f"prepare.train_size + prepare.chain_sum.n_test + n_validation = {wanted} distinct "
                              f"problems, but "
                              f"prepare.chain_sum's terms and digits allow fewer than "
                              f"{self.chain_sum.distinct_bound}: widen them or ask for fewer")
        if not self.benchmarks:
            raise ParamsError("prepare.benchmarks must name at least one benchmark")
        repeated = sorted({b for b in self.benchmarks if self.benchmarks.count(b) > 1})
        if repeated:
            raise ParamsError(f"prepare.benchmarks={list(self.benchmarks)}: {repeated[0]} appears twice; each "
                              f"benchmark is evaluated once")
        for name in self.benchmarks:
            if name != "chain_sum" and name not in REAL_DATASETS:
                raise ParamsError(f"prepare.benchmarks: unknown benchmark {name!r} (known: chain_sum, "
                                  f"{', '.join(BENCHMARKS)})")
        if (self.train_set == "chain_sum") != (self.benchmarks == ("chain_sum",)):
            raise ParamsError(f"prepare: train_set={self.train_set} with benchmarks={list(self.benchmarks)}; the chain "
                              f"sums are trained and evaluated only together")
        for name in {self.train_set, *self.benchmarks} - {"chain_sum"}:
            if name not in self.sources:
                raise ParamsError(f"prepare.sources has no entry for {name!r}")
        unknown = sorted(set(self.sources) - set(REAL_DATASETS))
        if unknown:
            raise ParamsError(f"prepare.sources.{unknown[0]}: no loader for it (known: {', '.join(REAL_DATASETS)})")


@dataclass(frozen=True)
class TaskConfig:
    """How a problem becomes a prompt, and how long an answer may be (shared by SFT, training and evaluation)."""

    prompt_template: str
    max_new_tokens: Tokens

    def check(self) -> None:
        if "{problem}" not in self.prompt_template:
            raise ParamsError(f"task.prompt_template={self.prompt_template!r} must contain '{{problem}}'")


@dataclass(frozen=True)
class GradingConfig:
    """Which verifier grades (twogrpo.grading): the training reward, and the benchmark evaluation the claims use."""

    reward: Grader
    evaluation: Literal["", Grader]

    @property
    def metric(self) -> Grader:
        return self.evaluation or self.reward


VLLM_MISSING = ("rollout.engine=vllm but vLLM is not installed in this environment: on the CPU run from .venv-vllm "
                "(make install-vllm), on a GPU install requirements-vllm-gpu.txt (see README)")


@dataclass(frozen=True)
class RolloutConfig:
    """The generation engine for rollouts and evaluation; both give the same sampling semantics."""

    engine: Literal["auto", "hf", "vllm"]
    vllm_dtype: Literal["float32", "bfloat16", "float16"]
    vllm_memory_utilization: Probability


@dataclass(frozen=True)
class BaseConfig:
    """The base policy: a pretrained model (hub id or local folder), or a tiny Qwen2 trained from scratch by SFT until
    it solves part of the problems (the embedded default; the keys after `revision` size and train it)."""

    model: str
    revision: str
    seed: Seed
    hidden_size: Annotated[int, Range(1, limit=16_384)]
    num_layers: Annotated[int, Range(1, limit=256)]
    num_heads: Annotated[int, Range(1, limit=256)]
    num_kv_heads: Annotated[int, Range(1, limit=256)]
    intermediate_size: Annotated[int, Range(1, limit=65_536)]
    lr: Positive
    warmup_steps: Annotated[int, Range(0, limit=1_000_000)]
    weight_decay: NonNegative
    batch_size: Annotated[int, Range(1, limit=65_536)]
    max_steps: Annotated[int, Range(1, limit=1_000_000)]
    eval_every: Annotated[int, Range(1)]
    val_size: Annotated[int, Range(1, limit=100_000)]
    target_accuracy: Probability
    max_position_embeddings: Annotated[int, Range(0, limit=1_048_576)] = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def scratch_positions(self) -> int:
        """The position limit of the tiny model trained from scratch: max_position_embeddings, or 128."""
        return self.max_position_embeddings or 128

    def check(self) -> None:
        if self.model != "scratch" and not Path(self.model).is_dir():
            if Path(self.model).exists():
                raise ParamsError(f"base.model={self.model!r} is a file; a local model is a folder in the hub's "
                                  f"format (config.json, weights, tokenizer)")
            if not HUB_ID.fullmatch(self.model):
                raise ParamsError(f"base.model={self.model!r}: no such folder (and not a hub id such as "
                                  f"Qwen/Qwen2.5-Math-1.5B)")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ParamsError(f"base: hidden_size={self.hidden_size}, num_heads={self.num_heads}, "
                              f"num_kv_heads={self.num_kv_heads} must divide evenly")
        if self.head_dim < 32:  # vLLM's CPU attention needs head_dim in {32, 64, 80, ...}
            raise ParamsError(f"base: head_dim = hidden_size/num_heads = {self.head_dim}; vLLM needs at least 32")


@dataclass(frozen=True)
class ArmConfig:
    """One arm of the study: a group size, its mini-batch, how its learning rate follows, and its variant."""

    group_size: Annotated[int, Range(2, limit=1024)]  # G, rollouts per prompt
    # linear: lr = reference_lr * prompts_per_minibatch / the reference arm's (the paper, after Goyal et al. 2017);
    # sqrt: lr = reference_lr * sqrt(that ratio) (the square-root rule for adaptive optimisers; x2.83 for 2-GRPO);
    # none: lr = reference_lr whatever the mini-batch.
    lr_scaling: Literal["linear", "sqrt", "none"]
    # Prompts per optimizer mini-batch. 0 (default): train.rollouts_per_minibatch / G, the paper's main budget
    # (Table 1). A positive value fixes it whatever G is, as the paper's group-size ablation (Table 4: 32 prompts).
    prompts_per_minibatch: Annotated[int, Range(0, limit=1_000_000)] = 0
    # 2-GRPO+RS (paper §6.3, DAPO's dynamic sampling): a group whose rewards are all equal is replaced by a fresh
    # group from a new prompt, while the step's rollouts stay within the reference arm's (16-GRPO's) budget.
    resample: bool = False
    # A factor on the rate lr_scaling gives, for a ratio no rule expresses, such as the one between the rates the
    # learning-rate grid chose for each arm on validation (docs/ladder.md).
    lr_factor: Positive = 1.0
    # adamw (default; verl's): each update moves each weight by about the rate, whatever the gradient's size. sgd: plain
    # SGD (no momentum, no weight decay), whose update is the rate times the gradient: the ladder's probe of the x8
    # collapse at a matched update size (docs/ladder.md).
    optimizer: Optimizer = "adamw"


class Role(enum.Enum):
    """What a train setting changes (TrainConfig.ROLES)."""

    RESULT = "shapes the result"  # a params dependency of the train stage and part of the checkpoint's fingerprint
    MEMORY = "memory and speed"  # a dependency too, as it can shape the result (TrainConfig.memory_only_keys)
    MATRIX = "which runs there are"  # each arm and seed is a stage of its own (dvc.yaml's matrix)


@dataclass(frozen=True)
class TrainConfig:
    """GRPO as verl runs it, with both arms derived from one rollout budget (paper App. C.1)."""

    # Each setting's role, declared for the settings that do not simply shape the result; every other setting does.
    # `python -m tools.deps` writes the train stage's params in dvc.yaml from it (the checkpoint's fingerprint reads
    # that list), and tests/test_dvc.py fails until a new setting is there.
    ROLES: ClassVar[dict[str, Role]] = {"seeds": Role.MATRIX, "arms": Role.MATRIX,
                                        "micro_batch_rollouts": Role.MEMORY, "micro_batch_tokens": Role.MEMORY}

    seeds: tuple[Seed, ...]
    arms: dict[str, ArmConfig]
    prompts: Annotated[int, Range(1, limit=1_000_000)]
    data_order: Literal["seed", "verl"]
    data_seed: Annotated[int, Range(0, limit=2**63 - 1)]
    epochs: Annotated[int, Range(1, limit=1000)]
    rollouts_per_minibatch: Annotated[int, Range(2, limit=1_000_000)]
    generation_batch_prompts: Annotated[int, Range(1, limit=1_000_000)]
    reference_lr: LearningRate
    reference_group_size: Annotated[int, Range(2, limit=1024)]
    warmup_gen_steps: Annotated[int, Range(0, limit=1_000_000)]
    weight_decay: NonNegative
    grad_clip: Positive
    clip_low: Annotated[float, Range(0, 1, open_low=True, open_high=True)]
    clip_high: Positive
    clip_ratio_c: Annotated[float, Range(1, open_low=True)]
    adv_std: AdvStd
    adv_eps: Positive
    loss_agg: LossAgg
    kl_coef: NonNegative
    entropy_coef: NonNegative
    ppo_epochs: Annotated[int, Range(1, limit=100)]
    temperature: Positive
    top_p: Probability
    top_k: TopK
    micro_batch_rollouts: Annotated[int, Range(1, limit=1_000_000)]
    skip_dead_groups: bool
    eval_every: Annotated[int, Range(1)]
    eval_benchmark: str
    eval_problems: Annotated[int, Range(1, limit=1_000_000)]
    eval_samples: Samples
    eval_kl: bool
    micro_batch_tokens: Annotated[int, Range(0, limit=10_000_000)] = 0
    balance_batch: bool = False
    precision: Literal["float32", "bfloat16"] = "float32"

    @classmethod
    def keys_with_role(cls, *roles: Role) -> tuple[str, ...]:
        """The params keys (train.<name>) of the settings with one of these roles, in the order of the fields."""
        return tuple(f"train.{f.name}" for f in dataclasses.fields(cls) if cls.ROLES.get(f.name, Role.RESULT) in roles)

    @classmethod
    def dependency_keys(cls) -> tuple[str, ...]:
        """The settings a run depends on: those that shape its result, or can (memory, under micro-token-mean)."""
        return cls.keys_with_role(Role.RESULT, Role.MEMORY)

    @property
    def memory_only_keys(self) -> tuple[str, ...]:
        """The micro-batch sizes (Role.MEMORY) when they change only memory and speed here (not when the loss is
        normalised per micro-batch): a checkpoint resumes across them, so an out-of-memory run resumes with a smaller
        micro-batch."""
        if self.loss_agg != "micro-token-mean":
            return self.keys_with_role(Role.MEMORY)
        if self.micro_batch_tokens:  # the token budget cuts the micro-batches; the rollout count is unused
            return ("train.micro_batch_rollouts",)
        return ()

    @property
    def skips_dead_groups(self) -> bool:
        """Whether the update and the old log-probs skip dead groups: asked for, and result-neutral (no KL or entropy
        term, which give a dead group a gradient; micro-token-mean is refused with it by check())."""
        return self.skip_dead_groups and not self.kl_coef and not self.entropy_coef

    def prompts_per_minibatch(self, arm: ArmConfig) -> int:
        return arm.prompts_per_minibatch or self.rollouts_per_minibatch // arm.group_size

    @property
    def reference_prompts_per_minibatch(self) -> int:
        return self.rollouts_per_minibatch // self.reference_group_size

    def lr(self, arm: ArmConfig) -> float:
        prompts, reference = self.prompts_per_minibatch(arm), self.reference_prompts_per_minibatch
        if arm.lr_scaling == "linear":
            lr = self.reference_lr * prompts / reference
        elif arm.lr_scaling == "sqrt":
            lr = self.reference_lr * math.sqrt(prompts / reference)
        else:
            lr = self.reference_lr
        return lr * arm.lr_factor

    @property
    def steps_per_epoch(self) -> int:
        return self.prompts // self.generation_batch_prompts

    @property
    def prompts_per_epoch(self) -> int:
        """Prompts an epoch trains on: whole generation batches, the remainder dropped (verl's drop_last)."""
        return self.steps_per_epoch * self.generation_batch_prompts

    @property
    def step_rollout_cap(self) -> int:
        """Rollouts a 2-GRPO+RS generation step may use: the reference arm's (16-GRPO's) per-step budget."""
        return self.generation_batch_prompts * self.reference_group_size

    @property
    def reference_arm(self) -> str:
        """The arm every other is compared with: the first at reference_group_size and reference_lr (16-GRPO)."""
        for name, arm in self.arms.items():
            if arm.group_size == self.reference_group_size and self.lr(arm) == self.reference_lr:
                return name
        raise ParamsError(f"train.reference_group_size={self.reference_group_size}: train.arms has no arm of that "
                          f"group size at train.reference_lr={self.reference_lr:g} (lr_scaling none or at the "
                          f"reference's prompts per mini-batch); the claims compare every arm against it")

    def arm(self, name: str) -> ArmConfig:
        if name not in self.arms:
            raise ParamsError(f"unknown arm {name!r}; train.arms has {sorted(self.arms)}")
        return self.arms[name]

    def check(self) -> None:
        if not self.seeds or not self.arms:
            raise ParamsError("train.seeds and train.arms must not be empty")
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:
            raise ParamsError(f"train.seeds={list(self.seeds)}: seed {repeated[0]} appears twice; each seed is one run "
                              f"of every arm, so the seeds must differ")
        for name in self.arms:
            if not ARM_NAME.fullmatch(name) or name == "base":
                raise ParamsError(f"train.arms.{name}: an arm name must be 1-40 letters, digits, '-' or '_', starting "
                                  f"with a letter or digit, and not 'base' (it names models/<arm>-s<seed>/ and the "
                                  f"DVC stages; got {name!r})")
        if self.skip_dead_groups and self.loss_agg == "micro-token-mean":
            raise ParamsError("train.skip_dead_groups=true with train.loss_agg=micro-token-mean: dead groups' tokens "
                              "weigh in each micro-batch's token mean there, so skipping them would change the result; "
                              "set train.loss_agg=token-mean to skip them")
        if self.prompts < self.generation_batch_prompts:
            raise ParamsError(f"train.prompts={self.prompts} is fewer than one generation batch "
                              f"(generation_batch_prompts={self.generation_batch_prompts})")
        self._check_group("reference_group_size", self.reference_group_size, 0)
        for name, arm in self.arms.items():
            self._check_group(f"arms.{name}.group_size", arm.group_size, arm.prompts_per_minibatch)
            if arm.resample and arm.group_size > self.reference_group_size:
                raise ParamsError(f"train.arms.{name}: resample needs group_size={arm.group_size} <= "
                                  f"reference_group_size={self.reference_group_size}, whose budget caps it")
            limit, why = ((MAX_SGD_LR, "an SGD update moves the weights too far") if arm.optimizer == "sgd"
                          else (MAX_LR, "AdamW diverges"))
            if self.lr(arm) > limit:
                raise ParamsError(f"train.arms.{name}: lr {self.lr(arm):g} (train.reference_lr={self.reference_lr:g}, "
                                  f"lr_scaling {arm.lr_scaling}, lr_factor {arm.lr_factor:g}) exceeds {limit:g}: "
                                  f"{why}; lower train.reference_lr")
        _ = self.reference_arm  # every arm is compared with it: refuse now, not after training them all

    def _check_group(self, key: str, g: int, fixed_prompts: int) -> None:
        if not fixed_prompts and self.rollouts_per_minibatch % g:
            raise ParamsError(f"train.rollouts_per_minibatch={self.rollouts_per_minibatch} is not divisible by "
                              f"train.{key}={g}")
        q = fixed_prompts or self.rollouts_per_minibatch // g
        if self.generation_batch_prompts % q:
            raise ParamsError(f"train.generation_batch_prompts={self.generation_batch_prompts} is not divisible into "
                              f"mini-batches of {q} prompts (train.{key}={g})")


@dataclass(frozen=True)
class EvaluateConfig:
    """Benchmark evaluation at the paper's sampling (T 0.7, top-p 0.8, top-k 20; k = 32 in the paper)."""

    problems: Annotated[int, Range(0, limit=1_000_000)]
    samples: Samples
    temperature: NonNegative
    top_p: Probability
    top_k: TopK
    max_new_tokens: Tokens
    seed: Seed


@dataclass(frozen=True)
class ContrastiveConfig:
    """The gradient-covariance measurement of the paper's Table 2 (100 prompts x 10 responses there)."""

    prompts: Annotated[int, Range(1, limit=100_000)]
    responses: Annotated[int, Range(2, limit=1024)]
    shifts: Annotated[int, Range(1, limit=100_000)]
    seed: Seed
    rows_per_pass: Annotated[int, Range(0, limit=100)]
    rollouts_per_pass: Annotated[int, Range(0, limit=1024)]


@dataclass(frozen=True)
class ReportConfig:
    """How the report judges the claims."""

    share_margin: Annotated[float, Range(0, 1, open_low=True, unit="a share of 16-GRPO's gain: 0.80 = 80%")]
    equivalence_margin: Annotated[float, Range(0, 1, open_low=True, unit="a fraction: 0.02 = 2 points")]
    target_fraction: Annotated[float, Range(0, 1, open_low=True, unit="a fraction: 0.95 = 95%")]
    paper_model: Literal["", "Qwen-1.5B", "Qwen-7B", "DS-1.5B"]
    paper_train_set: Literal["", "MATH", "DAPO-Math-Sub"]


@dataclass(frozen=True)
class RuntimeConfig:
    """How the stages run, not the method: no DVC stage but `validate` depends on these keys (what they can change:
    conf/config.yaml's comment on the section)."""

    launch: str
    eval_launch: str
    gpus: Annotated[int, Range(0, limit=4096)]
    checkpoint_every: Annotated[int, Range(0)]
    gradient_checkpointing: bool
    threads: Annotated[int, Range(0, limit=1024)]

    @property
    def launch_processes(self) -> tuple[int, bool]:
        """(processes, sharded) that runtime.launch starts: one for `python`, else its accelerate config's (or its
        --num_processes)."""
        return launches.processes(self.launch, "runtime.launch")

    def check(self) -> None:
        try:
            for key, launch in (("launch", self.launch), ("eval_launch", self.eval_launch)):
                launches.check(launch, f"runtime.{key}")
        except launches.LaunchError as error:
            raise ParamsError(str(error)) from None
        if not self.gpus and launches.accelerate_config(self.launch, "runtime.launch").get("gpu_ids") is not None:
            raise ParamsError(f"runtime.gpus=0 but runtime.launch={self.launch!r} starts processes on GPUs (its "
                              f"accelerate config names gpu_ids): on the CPU they would train apart from the plan; "
                              f"choose both with -S hardware=<name> (conf/hardware/)")
        if self.gpus and self.launch_processes[0] != self.gpus:
            raise ParamsError(f"runtime.gpus={self.gpus} but runtime.launch={self.launch!r} starts "
                              f"{self.launch_processes[0]} process(es): choose both with -S hardware=<name> "
                              f"(conf/hardware/)")


@dataclass(frozen=True)
class Params:
    prepare: PrepareConfig
    task: TaskConfig
    grading: GradingConfig
    rollout: RolloutConfig
    base: BaseConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    contrastive: ContrastiveConfig
    report: ReportConfig
    runtime: RuntimeConfig

    def check(self) -> None:
        """Every rule, on the whole configuration: the ranges of every number, then each section's own rules, then
        the rules across sections."""
        check_ranges(self)
        for section in (self.prepare, self.task, self.base, self.train, self.runtime):
            section.check()
        for key, grader, harm in (("grading.reward", self.grading.reward, "training would do nothing"),
                                  ("grading.evaluation", self.grading.evaluation,
                                   "every model would score 0 and no claim could be measured")):
            if grader == "verl-dapo" and "Answer:" not in self.task.prompt_template:
                raise ParamsError(f"{key}=verl-dapo reads an \"Answer:\" line, which task.prompt_template="
                                  f"{self.task.prompt_template!r} does not ask for: {harm} (-S prompt=dapo sets the "
                                  f"prompt and both graders)")
        tokens = self.train.micro_batch_tokens
        if tokens and tokens <= self.task.max_new_tokens:
            raise ParamsError(f"train.micro_batch_tokens={tokens} cannot hold one prompt and a full response "
                              f"(task.max_new_tokens={self.task.max_new_tokens}): set 0 (micro-batches by rollouts) or "
                              f"more than a prompt + {self.task.max_new_tokens} tokens")
        if self.contrastive.prompts > self.train.prompts:
            raise ParamsError(f"contrastive.prompts={self.contrastive.prompts} > train.prompts={self.train.prompts}")
        if self.train.prompts > self.prepare.train_size:
            raise ParamsError(f"train.prompts={self.train.prompts} > prepare.train_size={self.prepare.train_size}")
        if self.train.eval_benchmark not in self.prepare.benchmarks:
            raise ParamsError(f"train.eval_benchmark={self.train.eval_benchmark!r} is not in prepare.benchmarks "
                              f"{list(self.prepare.benchmarks)}")
        if self.base.model == "scratch":
            if self.prepare.train_set != "chain_sum":
                raise ParamsError(f"base.model=scratch trains the tiny model on the chain sums, not on "
                                  f"prepare.train_set={self.prepare.train_set}; name a pretrained model")
            if self.base.val_size > self.prepare.chain_sum.n_validation:
                raise ParamsError(f"base.val_size={self.base.val_size} > prepare.chain_sum.n_validation="
                                  f"{self.prepare.chain_sum.n_validation}")
            positions = self.base.scratch_positions
            for key, n in (("task.max_new_tokens", self.task.max_new_tokens),
                           ("evaluate.max_new_tokens", self.evaluate.max_new_tokens)):
                if n >= positions:
                    raise ParamsError(f"{key}={n} leaves no room for a prompt in the tiny model's {positions} "
                                      f"positions: raise base.max_position_embeddings (0 = 128) or lower {key}")
        if self.evaluate.temperature == 0:  # greedy: every sample of a problem is the same, and vLLM refuses n > 1
            for key, n in (("evaluate.samples", self.evaluate.samples),
                           ("train.eval_samples", self.train.eval_samples)):
                if n > 1:
                    raise ParamsError(f"evaluate.temperature=0 samples greedily: the {key}={n} samples of a problem "
                                      f"would all be equal; set {key}=1")
        if self.prepare.train_set == "chain_sum":
            chain = self.prepare.chain_sum
            for section, n, key, limit in (("train.eval_problems", self.train.eval_problems, "n_validation",
                                            chain.n_validation),
                                           ("evaluate.problems", self.evaluate.problems, "n_test", chain.n_test)):
                if n > limit:
                    raise ParamsError(f"{section}={n} > prepare.chain_sum.{key}={limit}")


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read params.yaml into Params, rejecting unknown keys, missing keys and wrong types."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path.resolve()}: no such file; run from the project's root (`make study` composes "
                          f"params.yaml from conf/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    params = _build(Params, raw, where="")
    params.check()
    return params


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(fields))})")
    missing = sorted(name for name, f in fields.items() if name not in raw and f.default is dataclasses.MISSING)
    if missing:
        raise ParamsError(f"missing key {where}{missing[0]}")
    return cls(**{name: _coerce(hints[name], value, f"{where}{name}") for name, value in raw.items()})


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:  # the range is checked by Params.check, for params built in code too
        return _coerce(typing.get_args(hint)[0], value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ParamsError(f"{key}={value!r}: expected one of {typing.get_args(hint)}")
        return value
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            raise ParamsError(f"{key}={value!r}: expected a list")
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ParamsError(f"{key}={value!r}: expected a mapping")
        return {str(k): _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ParamsError(f"{key}={value!r}: expected {hint.__name__}, got {type(value).__name__}")
    return value


def check_ranges(obj: Any, where: str = "") -> None:
    """Check every number of a params dataclass (and those nested in it) against its Range annotation."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for field in dataclasses.fields(obj):
        _check_value(hints[field.name], getattr(obj, field.name), f"{where}{field.name}")


def _check_value(hint: Any, value: Any, key: str) -> None:
    if typing.get_origin(hint) is Annotated:
        for allowed in typing.get_args(hint)[1:]:
            allowed.check(key, value)
    elif dataclasses.is_dataclass(hint):
        check_ranges(value, f"{key}.")
    elif typing.get_origin(hint) is tuple:
        for i, item in enumerate(value):
            _check_value(typing.get_args(hint)[0], item, f"{key}[{i}]")
    elif typing.get_origin(hint) is dict:
        for name, item in value.items():
            _check_value(typing.get_args(hint)[1], item, f"{key}.{name}")
