"""The qwen-1.5b-math setup at its real shape on one GPU: one generation step's worth of one optimizer mini-batch of
16-GRPO (32 prompts x 16 rollouts), its old log-probs and its update, with the setup's settings (bf16, micro-batches
of train.micro_batch_tokens, gradient checkpointing, vLLM's share of the GPU). Random weights from the real config,
so every response runs to the full 4,096 tokens: the worst case for memory.

    python bench/gpu_paper_shape.py                        # on a GPU: vLLM when installed, else HF generate
    python bench/gpu_paper_shape.py --tiny --engine hf     # a tiny shape on the CPU: checks the script
    python bench/gpu_paper_shape.py --record               # also write the table into docs/figures.md

Prints, per phase, the seconds and the peak memory (torch's allocator for the trainer's phases; the device's used
memory after vLLM generates), beside the planner's estimate for one GPU (twogrpo.plan), and the update's bf16
FLOP/s against the GPU's peak. `--record` writes them into docs/figures.md with the date, commit and machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import tempfile
import time

import torch
from figures import add_record_flag, recording
from transformers import Qwen2Config, Qwen2ForCausalLM

from tools.setups import compose
from twogrpo import plan
from twogrpo.forward import Forward, frozen_logprobs
from twogrpo.sampling import Samples
from twogrpo.trainer import Learner, Scored, update_minibatch

TINY = plan.ModelShape(vocab=1000, hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1, tied=True, positions=512)
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (NVIDIA's datasheets)
GIB = 2**30


def synced_seconds(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else float("nan")
    return out, time.perf_counter() - start, peak


def generate_vllm(folder: str, prompts: list[list[int]], group: int, tokens: int, fraction: float,
                  positions: int) -> tuple[list[list[int]], object]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=folder, skip_tokenizer_init=True, dtype="bfloat16", seed=0, enforce_eager=True,
              gpu_memory_utilization=fraction, enable_sleep_mode=True, max_model_len=positions)
    params = SamplingParams(n=group, temperature=1.0, max_tokens=tokens, ignore_eos=True, detokenize=False)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [list(c.token_ids) for o in outputs for c in o.outputs], llm


def generate_hf(model, prompts: list[list[int]], group: int, tokens: int) -> list[list[int]]:
    ids = torch.tensor([p for p in prompts for _ in range(group)], device=model.device)
    with torch.no_grad(), torch.autocast(model.device.type, dtype=torch.bfloat16):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                             max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape and short responses (CPU check)")
    parser.add_argument("--engine", choices=("auto", "vllm", "hf"), default="auto")
    parser.add_argument("--prompts", type=int, default=32, help="one 16-GRPO mini-batch: 32 prompts")
    parser.add_argument("--prompt-tokens", type=int, default=150)
    add_record_flag(parser, "gpu_paper_shape")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    params = compose(["setup=qwen-1.5b-math", "hardware=gpus-1"])[1]
    cfg, group = params.train, params.train.reference_group_size
    shape = TINY if args.tiny else plan.HUB_SHAPES[params.base.model]
    response = 16 if args.tiny else params.task.max_new_tokens
    if args.tiny:
        cfg = dataclasses.replace(cfg, micro_batch_tokens=128)
    positions = params.base.max_position_embeddings or shape.positions
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    engine = args.engine
    if engine == "auto":
        try:
            import vllm  # noqa: F401
            engine = "vllm" if device.type == "cuda" else "hf"
        except ImportError:
            engine = "hf"

    torch.manual_seed(0)
    config = Qwen2Config(**dataclasses.replace(shape, positions=positions).config(), rope_theta=10000.0)
    model = Qwen2ForCausalLM(config).to(device)
    model.gradient_checkpointing_enable()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# {datetime.date.today()}; {name}; torch {torch.__version__}; {shape.parameters:,} parameters; "
          f"engine {engine}; {args.prompts} prompts x {group} rollouts x {response} tokens; {cfg.precision}, "
          f"micro-batches of {cfg.micro_batch_tokens:,} tokens", flush=True)
    prompts = torch.randint(1, shape.vocab, (args.prompts, args.prompt_tokens)).tolist()

    rows = []
    if engine == "vllm":
        with tempfile.TemporaryDirectory() as folder:
            model.to(torch.bfloat16).save_pretrained(folder)
            model.float()
            (responses, llm), seconds, _ = synced_seconds(lambda: generate_vllm(
                folder, prompts, group, response, params.rollout.vllm_memory_utilization, positions))
        free, total = torch.cuda.mem_get_info()
        rows.append(("generation (vLLM, bf16)", seconds, total - free))
        llm.sleep(level=1)  # as the trainer: the KV cache is freed before the old log-probs
    else:
        responses, seconds, peak = synced_seconds(lambda: generate_hf(model, prompts, group, response))
        rows.append(("generation (HF, bf16 autocast)", seconds, peak))
    generated = sum(map(len, responses))
    samples = Samples([p for p in prompts for _ in range(group)], responses, [""] * len(responses),
                      [False] * len(responses))
    forward = Forward.of(cfg)
    old, seconds, peak = synced_seconds(lambda: frozen_logprobs(model, samples, forward, pad=0))
    rows.append(("old log-probs", seconds, peak))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    for p in model.parameters():  # AdamW's moments exist from a run's first step on: the steady state's memory
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    advantages = torch.tensor([1.0, -1.0] * (len(responses) // 2), device=device)
    learner, scored = Learner(model, optimizer, cfg, horizon=response, pad=0), Scored(samples, advantages, old)
    _, seconds, peak = synced_seconds(lambda: update_minibatch(learner, scored, list(range(len(responses)))))
    rows.append(("update (one optimizer mini-batch)", seconds, peak))

    total_memory = torch.cuda.get_device_properties(0).total_memory if device.type == "cuda" else 0
    estimate = plan.phase_memory(shape, plan.workload(params, 1, total_memory, sharded=False))
    print("| phase | seconds | tokens/s | peak memory, GiB | planner, GiB |\n|---|---|---|---|---|")
    with_prompts = generated + len(responses) * args.prompt_tokens
    tokens = [generated, with_prompts, with_prompts]
    for (phase, seconds, peak), key, n in zip(rows, plan.MEMORY_PHASES, tokens, strict=True):
        print(f"| {phase} | {seconds:.1f} | {n / seconds:,.0f} | {peak / GIB:.1f} | "
              f"{sum(estimate[key].values()) / GIB:.1f} |")
    flops = 8 * shape.parameters * tokens[2]  # forward, backward (2x) and the checkpointed forward's recompute
    peak_flops = next((v for k, v in BF16_PEAK.items() if k in name), None)
    achieved = flops / rows[2][1]
    print(f"# update: {achieved / 1e12:.1f} TFLOP/s (8 x parameters x tokens)"
          + (f", {achieved / peak_flops:.0%} of {name}'s {peak_flops / 1e12:.0f} TFLOP/s bf16 peak" if peak_flops
             else ""))


if __name__ == "__main__":
    main()
