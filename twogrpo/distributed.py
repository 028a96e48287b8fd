"""Data parallelism over processes with accelerate: every process generates and trains on its share of each
optimizer mini-batch (whole groups, so a group's advantage sees all its rewards), DDP averages the gradients, the
step's telemetry is summed over processes, evaluation chunks are shared out, and the first process writes.

Launched by `accelerate launch` (or torchrun), WORLD_SIZE > 1 and this is accelerate's state; otherwise it is one
process, and the same code runs with world = 1.
"""

from __future__ import annotations

import os

import torch


def cores_per_process() -> int:
    """This process's share of the machine's cores: all of them, or under `accelerate launch` the cores divided by
    the processes on this machine (LOCAL_WORLD_SIZE)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def process_seed(seed: int, rank: int) -> int:
    """The sampling seed of process `rank` of a run seeded `seed`: each process samples its own rollouts."""
    return seed + 1_000_003 * rank


class Dist:
    """This process's place among the training processes, and the collectives the trainer needs."""

    def __init__(self, accelerator=None) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1

    @staticmethod
    def from_environment() -> Dist:
        """accelerate's processes when launched with WORLD_SIZE > 1 (gloo on CPUs, NCCL on GPUs), else one."""
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedType

            accelerator = Accelerator(cpu=not torch.cuda.is_available())
            if accelerator.distributed_type not in (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
                # Sharded weights (FSDP, DeepSpeed ZeRO-3) would need gathering for generation, saving and vLLM's
                # weight sync; none of that is written yet, so such a run stops here rather than train wrongly.
                raise RuntimeError(f"accelerate's {accelerator.distributed_type.value} is not supported: the trainer "
                                   "runs data parallelism (DDP); use conf/accelerate/gpus-*.yaml or nodes-2x8.yaml")
            return Dist(accelerator)
        return Dist()

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
            torch.distributed.all_reduce(tensor)
        return tensor

    def gather_objects(self, item) -> list:
        """[item of process 0, item of process 1, ...] on every process."""
        if self.world == 1:
            return [item]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, item)
        return out

    def prepare(self, model):
        """The model to train: DDP-wrapped over several processes (it shares its parameters with `model`)."""
        return self.accelerator.prepare_model(model) if self.world > 1 else model

    def close(self) -> None:
        """Leave the process group together (a process that exits while another is still in a collective can abort
        it: "terminate called without an active exception")."""
        if self.world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
