"""What the engines share: the sampling settings, the samples they return, and the interface every engine has.

The HF engine (twogrpo.engine) and the vLLM engine (twogrpo.vllm_engine) both implement Engine; the trainer and the
evaluation see only this module's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0 = greedy
    top_p: float
    top_k: int  # 0 = off
    max_new_tokens: int
    n: int  # samples per prompt


@dataclass
class Samples:
    """n samples for each of P prompts, in prompt-major order (prompt 0's n samples first)."""

    prompt_ids: list[list[int]]  # [P * n] prompt tokens, unpadded
    response_ids: list[list[int]]  # [P * n] response tokens, EOS included when generated
    texts: list[str]  # [P * n] decoded responses, special tokens dropped
    truncated: list[bool]  # [P * n] stopped by max_new_tokens before EOS
    logprobs: list[list[float]] | None = None  # [P * n] the engine's log-prob of each response token (vLLM only)

    @property
    def num_tokens(self) -> int:
        return sum(len(r) for r in self.response_ids)

    def select(self, rows: list[int]) -> Samples:
        return Samples(*([getattr(self, f)[i] for i in rows] for f in _PER_SAMPLE),
                       logprobs=None if self.logprobs is None else [self.logprobs[i] for i in rows])

    def extend(self, other: Samples) -> None:
        for f in _PER_SAMPLE:
            getattr(self, f).extend(getattr(other, f))
        if self.logprobs is not None:
            self.logprobs.extend(other.logprobs)


_PER_SAMPLE = ("prompt_ids", "response_ids", "texts", "truncated")


class Engine(Protocol):
    """A generation engine. `collective`: every process must join each generate call (sharded weights)."""

    tokenizer: PreTrainedTokenizerBase
    collective: bool

    def generate(self, prompts: list[str], sampling: Sampling) -> Samples:
        """n samples per prompt, prompt-major."""

    def sync(self, model: torch.nn.Module) -> None:
        """Take the trainer's current weights (after each generation step's updates)."""

    def release(self) -> None:
        """Free generation memory while the trainer updates."""

    def resume(self) -> None:
        """Take back what release() freed."""
