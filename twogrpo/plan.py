"""What a setup needs of a GPU machine: memory per GPU and per phase, and the preflight that stops a run before any
work when the GPUs present cannot hold it (the hours: twogrpo.hours).

The memory model counts the tensors the trainer keeps (twogrpo.trainer, twogrpo.grpo), in bytes per GPU:
- resident in every phase: float32 weights and AdamW's two moments, split over the GPUs when sharded (FSDP); with
  DDP its gradient buckets (a float32 copy of the gradients, allocated when it wraps the model); with a KL penalty
  the frozen reference policy, whole (also kept for train.eval_kl);
- gradients, float32, split when sharded, during the update (freed once the step's updates are done);
- gathered: with FSDP the root (embedding, output layer; kept from the forward to the backward pass) and two
  decoder layers (the one running and the one prefetched), in the compute dtype; with DDP under bf16 autocast
  without gradient checkpointing, the bf16 copies of the weights that the backward pass keeps;
- activations of one micro-batch of T tokens: per decoder layer about 10 hidden-size and 4 intermediate-size values
  per token (norms, q/k/v, attention output, the MLP's gate, up and product), all layers without gradient
  checkpointing; with it each layer's input (float32 under autocast: the residual stream) plus two layers' worth
  while one is recomputed; plus the final hidden states, whole and at the response positions;
- logits: a chunk of at most grpo.LOGIT_CHUNK_ELEMENTS float32 values (fewer when the micro-batch has fewer response
  tokens), of which three copies live at once: in the forward pass the log-softmax, its exponential and their
  product (the entropy), in the backward pass the log-softmax, the gradient it receives and the one it passes on
  (two more with an entropy bonus); and in the backward pass one float32 gradient of the output layer's weight;
- vLLM: rollout.vllm_memory_utilization of the GPU's memory while it generates; asleep (weights offloaded, KV cache
  freed) from the old log-probs to the sync.
A test checks it against the peak memory measured on the CPU at three shapes with Qwen2.5's vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from twogrpo import launch
from twogrpo.config import Params
from twogrpo.grpo import LOGIT_CHUNK_ELEMENTS

GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """A Qwen2 model's dimensions, as its config.json states them."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool  # the output layer shares the embedding's weights
    positions: int

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        return cls(config["vocab_size"], config["hidden_size"], config["intermediate_size"],
                   config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"],
                   bool(config.get("tie_word_embeddings", False)), config["max_position_embeddings"])

    def config(self) -> dict:
        """The config.json keys of this shape (from_config's inverse): Qwen2Config(**shape.config())."""
        return {"vocab_size": self.vocab, "hidden_size": self.hidden, "intermediate_size": self.intermediate,
                "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads, "tie_word_embeddings": self.tied,
                "max_position_embeddings": self.positions}

    @property
    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def layer_parameters(self) -> int:
        kv = self.hidden // self.heads * self.kv_heads
        attention = self.hidden * (self.hidden + 2 * kv) + (self.hidden + 2 * kv) + self.hidden * self.hidden
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def parameters(self) -> int:
        return self.embedding_parameters + self.layers * self.layer_parameters + self.hidden


# The paper's models, from their config.json on the hub (read from the hub's copies; see docs/gpu.md).
HUB_SHAPES = {
    "Qwen/Qwen2.5-Math-1.5B": ModelShape(151936, 1536, 8960, 28, 12, 2, True, 4096),
    "Qwen/Qwen2.5-Math-7B": ModelShape(152064, 3584, 18944, 28, 28, 4, False, 4096),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": ModelShape(151936, 1536, 8960, 28, 12, 2, False, 131072),
}


@dataclass(frozen=True)
class Workload:
    """How the training runs on each GPU."""

    gpus: int
    sharded: bool  # FSDP (weights, gradients and AdamW state split over the GPUs) rather than DDP
    precision: str  # float32 or bfloat16 (compute)
    gradient_checkpointing: bool
    micro_batch_tokens: int  # (padded) prompt + response tokens of one forward and backward pass
    response_tokens: int  # of which response tokens (their log-probs go through the output layer)
    vllm_fraction: float  # rollout.vllm_memory_utilization (0 = no vLLM on the GPU)
    gpu_memory: int  # bytes of one GPU
    reference: bool = False  # a frozen base for the KL penalty (train.kl_coef > 0) or train.eval_kl, never sharded
    entropy_grad: bool = False  # an entropy bonus (train.entropy_coef > 0): its gradient goes through the logits


def phase_memory(shape: ModelShape, work: Workload) -> dict[str, dict[str, float]]:
    """Bytes per GPU of each part, in each phase: generation, old_logprob, update (see the module docstring)."""
    P, H, V, T = shape.parameters, shape.hidden, shape.vocab, work.micro_batch_tokens
    split = work.gpus if work.sharded else 1
    bf16 = work.precision == "bfloat16"
    compute = 2 if bf16 else 4
    stream = 2 if bf16 and work.sharded else 4  # autocast keeps the residual stream in float32; FSDP's bf16 weights not
    resident = {"weights": 4 * P / split, "optimizer": 8 * P / split}
    if work.reference:
        resident["reference"] = 4 * P
    if not work.sharded and work.gpus > 1:
        resident["DDP buckets"] = 4 * P  # a float32 copy of the gradients, allocated when DDP wraps the model
    if work.sharded:
        gathered = compute * (shape.embedding_parameters + 2 * shape.layer_parameters)
    else:  # autocast's bf16 weight copies, kept for the backward pass unless the layers are recomputed
        gathered = 2 * P if bf16 and not work.gradient_checkpointing else 0
    layer = T * (10 * H + 4 * shape.intermediate) * compute
    saved = shape.layers * T * H * stream + 2 * layer if work.gradient_checkpointing else shape.layers * layer
    chunk = min(work.response_tokens, max(1, LOGIT_CHUNK_ELEMENTS // V)) * V * 4
    hidden = 2 * T * H * 4
    return {
        "generation": {**resident, "vllm": work.vllm_fraction * work.gpu_memory},
        "old_logprob": {**resident, "gathered": gathered if work.sharded else 0, "activations": layer + hidden,
                        "logits": 3 * chunk},
        "update": {**resident, "gradients": 4 * P / split, "gathered": gathered, "activations": saved + hidden,
                   "logits": (5 if work.entropy_grad else 3) * chunk + V * H * 4},
    }


MEMORY_PHASES = ("generation", "old_logprob", "update")  # the phases phase_memory plans


def peak_memory(shape: ModelShape, work: Workload) -> float:
    return max(sum(parts.values()) for parts in phase_memory(shape, work).values())


PROMPT_TOKENS = 300  # an upper estimate of a rendered MATH prompt, for the width of a micro-batch of rollouts


def workload(params: Params, gpus: int, gpu_memory: int, sharded: bool) -> Workload:
    t = params.train
    longest = params.task.max_new_tokens + PROMPT_TOKENS  # a rollout longer than the budget is a micro-batch alone
    tokens = max(t.micro_batch_tokens, longest) if t.micro_batch_tokens else t.micro_batch_rollouts * longest
    return Workload(gpus=gpus, sharded=sharded, precision=t.precision,
                    gradient_checkpointing=params.runtime.gradient_checkpointing,
                    micro_batch_tokens=tokens, response_tokens=tokens,
                    vllm_fraction=params.rollout.vllm_memory_utilization if params.rollout.engine != "hf" else 0.0,
                    gpu_memory=gpu_memory, reference=t.kl_coef > 0 or t.eval_kl, entropy_grad=t.entropy_coef > 0)


def model_shape(params: Params, model_dir: Path | str | None = None) -> ModelShape:
    """The base model's shape: from a saved model folder's config.json (the train stage's models/base, which holds
    the raised position limit), else from base.model (a folder, or one of the paper's models) and
    base.max_position_embeddings."""
    if model_dir is not None:
        return ModelShape.from_config(json.loads((Path(model_dir) / "config.json").read_text()))
    config = Path(params.base.model) / "config.json"
    if config.exists():
        shape = ModelShape.from_config(json.loads(config.read_text()))
    elif params.base.model in HUB_SHAPES:
        shape = HUB_SHAPES[params.base.model]
    else:
        raise ValueError(f"base.model={params.base.model}: no config.json to read its shape from")
    if params.base.max_position_embeddings:
        shape = dataclasses.replace(shape, positions=params.base.max_position_embeddings)
    return shape


def contrastive_memory(parameters: int, shifts: int, responses: int, rows_per_pass: int, rollouts_per_pass: int
                       ) -> tuple[int, int]:
    """Bytes the Table 2 panel (twogrpo.contrastive) holds besides the model and one pass's activations, on the
    model's device and in host memory, counted in parameter-sized vectors for a float32 model. On the device, while
    the most rows are measured (the training rollouts' four, or rows_per_pass): each row's two pooled means and four
    sums, and a pass's per-rollout gradients held twice (vmap's and flattened; a backward's and flattened for one).
    In host memory: a first-pass mean and a backward's gradient in float64, or later each row's centred and unit sums
    of the first K positives and the last K negatives (K = shifts), whichever is more."""
    float32, float64 = 4, 8
    rows = min(rows_per_pass or 4, 4)
    rollouts = rollouts_per_pass or responses
    device = (2 * rows + 4 * rows + 2 * rollouts) * float32
    host = max(2 * float64, 2 * 2 * shifts * rows * float32)
    return device * parameters, host * parameters


class PreflightError(RuntimeError):
    """This machine cannot train the setup: raised before any work."""


def preflight(params: Params, model_dir: Path | str | None = None) -> None:
    """Stop before any work when this machine cannot train the setup: fewer GPUs than its share of runtime.gpus, or
    less free memory on one of them than the plan's peak. The shape comes from `model_dir`'s config.json (the train
    stage's models/base), else from base.model (a folder, or one of the paper's models; otherwise only the GPUs are
    counted), so the prepare stage can check before the data and the weights are downloaded. Nothing to check on the
    CPU (runtime.gpus 0)."""
    import torch

    need = params.runtime.gpus
    if not need:
        return
    _, machines, sharded = launch.layout(params.runtime.launch, "runtime.launch")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", need // machines))  # this machine's share of the processes
    present = torch.cuda.device_count()
    if present < local:
        raise PreflightError(f"the setup trains on runtime.gpus={need} GPUs, {local} on this machine, which has "
                             f"{present}: choose a machine that fits with -S hardware=<name> (conf/hardware/)")
    try:
        shape = model_shape(params, model_dir)
    except ValueError:
        return  # a hub model of unknown shape: its GPUs are counted, its memory is checked once it is saved
    for device in range(local):
        free, total = torch.cuda.mem_get_info(device)
        peak = peak_memory(shape, workload(params, need, total, sharded))
        if free < peak:
            raise PreflightError(
                f"GPU {device} ({torch.cuda.get_device_name(device)}) has {free / GIB:.1f} GiB free of "
                f"{total / GIB:.1f}; the plan needs {peak / GIB:.1f} GiB per GPU (python -m tools.setups <setup> "
                f"--gpus {need} --gpu-memory {total / GIB:.0f}): shard over more GPUs (-S hardware=<name>, "
                f"conf/hardware/), or lower train.micro_batch_tokens or rollout.vllm_memory_utilization")


def stop_unless_this_machine_fits(params: Params, stage: str, model_dir: str | None = None) -> None:
    """The preflight (twogrpo.plan.preflight), by the process that DVC started, before it launches others: on a
    machine that cannot train the setup the stage exits with the message alone, printed once."""
    if "WORLD_SIZE" in os.environ or os.environ.get("TWOGRPO_LAUNCHED"):
        return  # started by a launcher, after its parent checked
    try:
        preflight(params, model_dir)
    except PreflightError as error:
        sys.exit(f"{stage}: {error}")
