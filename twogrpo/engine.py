"""Rollout and evaluation generation: the HF engine and the engine choice.

Two engines share one interface (twogrpo.sampling.Engine): HF `generate` on the training model itself (the default on
the CPU) and vLLM (twogrpo/vllm_engine.py), colocated in the training process.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from twogrpo.config import VLLM_MISSING, RolloutConfig
from twogrpo.distributed import is_sharded, pad_to_most, process_seed
from twogrpo.sampling import Samples, Sampling


class HFEngine:
    """Sampling with `model.generate` on the training model itself, so there are no weights to synchronise."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, batch_sequences: int = 1024):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_sequences = batch_sequences  # sequences per generate call (memory only)
        # Stop tokens: the model's generation config names them (a chat model stops at its end-of-turn token, which
        # may differ from the tokenizer's EOS), plus the tokenizer's EOS.
        configured = model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [] if configured is None else [configured]
        self.stop_ids = list(dict.fromkeys([*configured, tokenizer.eos_token_id]))

    @property
    def collective(self) -> bool:
        """Whether generating takes every process (sharded weights): then all of them call generate together."""
        return is_sharded(self.model)

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: Sampling) -> Samples:
        """n samples per prompt. With sharded weights every process must call this at once, with any number of
        prompts (none included): each runs as many generate calls as the process with the most, on a one-token
        dummy when it has run out (its RNG state restored after), and HF's synced_gpus keeps every call stepping
        until all processes are done (a finished process samples nothing more), so the samples are those of
        replicated weights."""
        tok = self.tokenizer
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        repeated = [ids for ids in encoded for _ in range(sampling.n)]
        chunks = [repeated[i:i + self.batch_sequences] for i in range(0, len(repeated), self.batch_sequences)]
        was_training = self.model.training
        self.model.eval()
        out = Samples([], [], [], [])
        for chunk, real in pad_to_most(chunks, self.collective, [[tok.pad_token_id]]):
            batch = tok.pad({"input_ids": chunk}, padding=True, return_tensors="pt").to(self.model.device)
            knobs = (dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
                     if sampling.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
            with nullcontext() if real else torch.random.fork_rng():  # a dummy leaves the sampling RNG as it was
                generated = self.model.generate(
                    **batch, **knobs, max_new_tokens=sampling.max_new_tokens, pad_token_id=tok.pad_token_id,
                    eos_token_id=self.stop_ids, synced_gpus=self.collective,
                )[:, batch["input_ids"].shape[1]:]
            if not real:
                continue
            for prompt_ids, row in zip(chunk, generated.tolist(), strict=True):
                response, truncated = cut_at_stop(row, self.stop_ids)
                out.prompt_ids.append(prompt_ids)
                out.response_ids.append(response)
                out.truncated.append(truncated)
        out.texts = tok.batch_decode(out.response_ids, skip_special_tokens=True)
        self.model.train(was_training)
        return out

    def sync(self, model: torch.nn.Module) -> None:
        """Nothing to do: the engine samples from the training model itself."""

    def release(self) -> None:
        """Nothing to release."""

    def resume(self) -> None:
        """Nothing to resume."""


def cut_at_stop(row: list[int], stop_ids: list[int]) -> tuple[list[int], bool]:
    """The response up to and including its first stop token, and whether it ran out of tokens before one."""
    for i, token in enumerate(row):
        if token in stop_ids:
            return row[: i + 1], False
    return row, True


def make_engine(cfg: RolloutConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                model_dir: Path | str, seed: int):
    """The engine cfg.engine names: hf, vllm, or auto (vLLM when it is installed and a GPU is present, else HF).
    vLLM loads the weights from model_dir, which must hold the same weights as `model`; under several processes each
    process gets its own engine, seeded per process (twogrpo.distributed.process_seed)."""
    from twogrpo.vllm_engine import VLLMEngine, vllm_available

    name = cfg.engine
    if name == "auto":
        name = "vllm" if torch.cuda.is_available() and vllm_available() else "hf"
    if name == "hf":
        return HFEngine(model, tokenizer)
    if not vllm_available():
        raise RuntimeError(VLLM_MISSING)
    seed = process_seed(seed, int(os.environ.get("RANK", "0")))
    return VLLMEngine(model_dir, tokenizer, seed, cfg.vllm_dtype, cfg.vllm_memory_utilization,
                      max_model_len=model.config.max_position_embeddings)  # the HF model's limit, stated
