"""Data parallelism over processes with accelerate: every process generates and trains on its share of each
optimizer mini-batch (whole groups, so a group's advantage sees all its rewards), the gradients are averaged, the
step's telemetry is summed over processes, evaluation chunks are shared out, and the first process writes.

Launched by `accelerate launch` (or torchrun), WORLD_SIZE > 1 and this is accelerate's state; otherwise it is one
process, and the same code runs with world = 1. The weights are replicated (DDP), or, with an accelerate config of
distributed_type FSDP, sharded with torch's FSDP2 (`fully_shard` on each decoder layer and the whole model: each
process holds 1/world of the weights, gradients and AdamW state). Sharded weights make every forward pass a
collective (each layer's weights are all-gathered), so all processes must run as many forward passes as each other:
`pad_to_most` pads the generate calls and micro-batches of a process that has fewer.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, in the first process's memory


def process_seed(seed: int, rank: int) -> int:
    """The sampling seed of process `rank` of a run seeded `seed`: each process samples its own rollouts."""
    return seed + 1_000_003 * rank


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def collective_device() -> torch.device:
    """Where a collective's tensors must be: this process's GPU under NCCL, the CPU under gloo."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def max_over_processes(n: int) -> int:
    """The largest n of all processes (n itself with one process)."""
    if not torch.distributed.is_initialized():
        return n
    tensor = torch.tensor([n], dtype=torch.int64, device=collective_device())
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor)


def pad_to_most(items: list, collective: bool, dummy) -> list[tuple[object, bool]]:
    """`items`, each flagged real; when `collective`, followed by (dummy, False) up to as many as the process with
    the most has, so that every process makes as many collective calls (a dummy's result is dropped)."""
    flagged = [(item, True) for item in items]
    if collective:
        flagged += [(dummy, False)] * (max_over_processes(len(items)) - len(items))
    return flagged


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole weights, to save. Sharded: gathered into the first process's CPU memory (every process
    must call it; the others get {})."""
    return get_model_state_dict(model, options=GATHERED) if is_sharded(model) else model.state_dict()


def full_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) one at a time on every process, for an engine's weight sync: a sharded model gathers
    one tensor at a time (every process must iterate it whole), so no process holds a second full copy."""
    for name, tensor in model.state_dict().items():
        yield name, local_value(tensor)


def unsharded(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A model to save: `model` itself, or when it is sharded a plain model of its architecture holding `weights`
    (full_state_dict's; built on the meta device and given the tensors themselves, so nothing is copied)."""
    if not is_sharded(model):
        return model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(weights, strict=True, assign=True)
    plain.tie_weights()  # assign=True gave the tied embedding and head a tensor each: save one, as the model does
    plain.generation_config = model.generation_config
    return plain


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state, to save (sharded: as full_state_dict, on the first process)."""
    if is_sharded(model):
        return get_optimizer_state_dict(model, optimizer, options=GATHERED)
    return optimizer.state_dict()


def load_full_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optimizer_state: dict):
    """Load what full_state_dict and full_optimizer_state returned (read back by every process; when sharded each
    keeps its shard)."""
    if is_sharded(model):
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, weights, options=options)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
    else:
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor: the whole value of a DTensor (a sharded model's gradient norm is one), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This process's share of a tensor: a DTensor's local shard (a sharded model's weight), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() in ("true", "1", "yes")


class Dist:
    """This process's place among the training processes, and the collectives the trainer needs."""

    def __init__(self, accelerator=None, sharded: bool = False, reshard_after_forward: bool = True) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.sharded = sharded and self.world > 1
        self.reshard_after_forward = reshard_after_forward

    @staticmethod
    def from_environment() -> Dist:
        """accelerate's processes when launched with WORLD_SIZE > 1 (gloo on CPUs, NCCL on GPUs), else one. With an
        accelerate config of distributed_type FSDP (the launcher sets ACCELERATE_USE_FSDP and FSDP_*), the weights
        are sharded: FSDP_RESHARD_AFTER_FORWARD true is ZeRO-3 (FULL_SHARD), false ZeRO-2 (SHARD_GRAD_OP)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Dist()
        from accelerate import Accelerator

        if _flag("ACCELERATE_USE_DEEPSPEED", "false"):
            raise RuntimeError("DeepSpeed is not supported: for ZeRO-3 use conf/accelerate/fsdp-gpus-8.yaml (FSDP "
                               "FULL_SHARD), for ZeRO-2 the same with fsdp_reshard_after_forward: false")
        sharded = _flag("ACCELERATE_USE_FSDP", "false")
        if sharded and _flag("FSDP_OFFLOAD_PARAMS", "false"):
            raise RuntimeError("fsdp_offload_params is not supported: the weights stay on the GPUs")
        if sharded and _flag("FSDP_CPU_RAM_EFFICIENT_LOADING", "false"):
            # transformers would load the weights on the first process only and leave the others' uninitialised
            # for FSDP1 to broadcast; every process here loads the whole policy, then shards it.
            raise RuntimeError("set fsdp_cpu_ram_efficient_loading: false in the accelerate config (accelerate's "
                               "default is true): every process loads the policy before it is sharded")
        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        return Dist(accelerator, sharded, _flag("FSDP_RESHARD_AFTER_FORWARD", "true"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n_prompts: int, per_minibatch: int) -> list[int]:
        """Positions in a generation batch of n_prompts of this process's prompts: from each optimizer mini-batch of
        per_minibatch prompts, its contiguous per_minibatch / world. Every prompt goes to exactly one process."""
        if per_minibatch % self.world:
            raise ValueError(f"{per_minibatch} prompts per mini-batch do not split over {self.world} processes")
        part = per_minibatch // self.world
        return [first + self.rank * part + i for first in range(0, n_prompts, per_minibatch) for i in range(part)]

    def sum(self, values) -> torch.Tensor:
        """Element-wise sum over processes of a float64 vector (a copy of `values` with one process)."""
        tensor = torch.as_tensor(values, dtype=torch.float64).clone()
        if self.world > 1:
            tensor = tensor.to(collective_device())
            torch.distributed.all_reduce(tensor)
        return tensor.cpu()

    def gather_objects(self, item) -> list:
        """[item of process 0, item of process 1, ...] on every process."""
        if self.world == 1:
            return [item]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, item)
        return out

    def prepare(self, model, precision: str = "float32"):
        """The model to train, before its optimizer is made: DDP-wrapped over several processes (the wrapper shares
        its parameters with `model`), or sharded in place (FSDP2: each decoder layer, then the rest). With precision
        bfloat16 a sharded model all-gathers its weights in bf16 and reduces gradients in float32 (verl's FSDP mixed
        precision); the shards, gradients and AdamW state stay float32."""
        if self.sharded:
            dtype = torch.bfloat16 if precision == "bfloat16" else None
            policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
            for layer in [m for m in model.modules() if type(m).__name__ in model._no_split_modules]:
                fully_shard(layer, reshard_after_forward=self.reshard_after_forward, mp_policy=policy)
            # The rest (embedding, final norm, output layer) stays gathered from the forward pass to the backward,
            # as FSDP2 does by default for the root: the log-probs run the output layer after the forward pass,
            # a chunk at a time (grpo.head_logprobs).
            return fully_shard(model, reshard_after_forward=False, mp_policy=policy)
        return self.accelerator.prepare_model(model) if self.world > 1 else model

    def close(self) -> None:
        """Leave the process group together (a process that exits while another is still in a collective can abort
        it: "terminate called without an active exception"). Call it once the model is out of scope: a sharded
        model's device mesh holds the process group, and one still alive at exit aborted the second process in 5 of
        20 two-process runs here (0 of 20 with the model collected first, which this does)."""
        if self.world > 1:
            gc.collect()  # FSDP's module states and hooks form reference cycles
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
