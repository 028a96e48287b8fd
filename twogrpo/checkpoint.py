"""Checkpoints: what a killed stage needs to continue exactly as if it had never stopped.

Training saves the policy, the optimizer and scheduler states, every RNG state (torch CPU and CUDA, the prompt
stream's numpy generator), the prompt stream's position, the counters, the ledger so far and the phase timers
(checkpoints/<arm>-s<seed>/); evaluation saves the records of the chunks done, each sampled under its own seed
(checkpoints/eval-<model>/, one per process).
A checkpoint lives outside DVC's outputs (DVC deletes a stage's outputs before rerunning it), is written atomically,
and carries a fingerprint of everything that determines the result (twogrpo.lineage.stage_fingerprint: the params
keys and the code the stage depends on, the input weights): one from other settings or code is ignored, never
resumed. One that cannot be read (a truncated or corrupt file) is moved aside to checkpoints/<name>.unreadable-<time>/
with a warning, and the stage starts over. The stage deletes it once its outputs are written.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from twogrpo.io import atomic_path

log = logging.getLogger(__name__)
ROOT = Path("checkpoints")


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class Checkpointing:
    """Periodic snapshots of a run, and the snapshot to resume from (Checkpoint stores them)."""

    every: int  # steps between snapshots (generation steps in GRPO, SFT steps in the base stage); 0 = none
    save: Callable[[dict], None]
    resume: dict | None = None

    def due(self, step: int, last: int) -> bool:
        """Whether to save after `step`: every `every` steps, but not after the last (the outputs follow)."""
        return bool(self.every) and step % self.every == 0 and step < last


class Checkpoint:
    """The checkpoint file of one run: checkpoints/<name>/state.pt, plus state.json (step, fingerprint) to read
    without loading the tensors."""

    def __init__(self, name: str, fingerprint: str, root: Path = ROOT) -> None:
        self.dir = root / name
        self.fingerprint = fingerprint

    def save(self, state: dict, step: int) -> None:
        """Write `state` atomically (a kill mid-write leaves the previous checkpoint); `step` says how far it got."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / "state.pt") as tmp:
            torch.save({**state, "step": step, "fingerprint": self.fingerprint}, tmp)
        with atomic_path(self.dir / "state.json") as tmp:
            tmp.write_text(json.dumps({"step": step, "fingerprint": self.fingerprint}))
        log.info("checkpoint at step %d: %s", step, self.dir / "state.pt")

    def load(self) -> dict | None:
        """The saved state when there is one for these settings; None (and why, logged) otherwise."""
        path = self.dir / "state.pt"
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            state["step"], state["fingerprint"]  # noqa: B018 - a dict with both, or not a checkpoint of ours
        except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError, IndexError) as error:
            # a truncated zip (RuntimeError), a file that is no pickle, a foreign object; not a memory or I/O error,
            # which would say nothing of the file (and could strike one process only)
            self._set_aside(f"{type(error).__name__}: {error}")
            return None
        if state["fingerprint"] != self.fingerprint:
            log.warning("%s was saved with other settings (params, arm, seed or base model); starting over", path)
            return None
        log.info("resuming from %s at step %d", path, state["step"])
        return state

    def _set_aside(self, why: str) -> None:
        """Move the unreadable checkpoint to <name>.unreadable-<time>/, so the run starts clean and the file stays
        for a look; every process of a run finds the same file unreadable, the first one moves it."""
        aside = self.dir.with_name(f"{self.dir.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            self.dir.rename(aside)
        except OSError:  # another process of this run moved it first (or into the same second's name)
            pass
        log.warning("%s cannot be read (%s); set aside in %s, starting over", self.dir / "state.pt", why, aside)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
