"""What a GRPO run carries from one generation step to the next, which is what its checkpoint holds: the weights, the
optimizer and scheduler states, the prompt stream's position, the counters, the ledger so far, the phase timings and
every process's RNG states. `snapshot` and `restore` are exact: a run restored from a snapshot continues as if it
had never stopped (on the CPU, with the HF engine)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from twogrpo.checkpoint import rng_states, set_rng_states
from twogrpo.distributed import Dist, full_optimizer_state, full_state_dict, load_full_states
from twogrpo.rollouts import PromptStream
from twogrpo.telemetry import PhaseTimer


@dataclass
class RunState:
    model: torch.nn.Module  # the unwrapped policy (DDP/FSDP wrap it for the update)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stream: PromptStream
    timer: PhaseTimer
    totals: dict[str, int] = field(default_factory=lambda: {"opt_steps": 0, "rollouts": 0, "tokens": 0})
    ledger: list[dict] = field(default_factory=list)  # one row per generation step done (TrainSteps)

    def snapshot(self, gen_step: int, dist: Dist) -> dict:
        """The state after `gen_step`, whole on the first process (every process calls it: sharded weights are
        gathered, and each process's RNG states)."""
        return {"gen_step": gen_step, "model": full_state_dict(self.model),
                "optimizer": full_optimizer_state(self.model, self.optimizer),
                "scheduler": self.scheduler.state_dict(), "rng_per_process": dist.gather_objects(rng_states()),
                "stream": self.stream.state(), "totals": dict(self.totals), "ledger": list(self.ledger),
                "timer": self.timer.state()}

    def restore(self, state: dict, dist: Dist) -> int:
        """Continue from a snapshot (saved by as many processes as this run has); returns its generation step."""
        if len(state["rng_per_process"]) != dist.world:
            raise ValueError(f"the checkpoint was saved by {len(state['rng_per_process'])} processes; resume it with "
                             f"as many (this run has {dist.world})")
        load_full_states(self.model, self.optimizer, state["model"], state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stream.restore(state["stream"])
        self.totals.update(state["totals"])
        self.timer.restore(state["timer"])
        self.ledger.extend(state["ledger"])
        set_rng_states(state["rng_per_process"][dist.rank])
        return state["gen_step"]
