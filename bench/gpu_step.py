"""One bf16 GRPO-sized training step and HF generation of a Qwen2.5-Math-1.5B-shaped model with random weights.

    python bench/gpu_step.py            # on a GPU: the 1.5B shape
    python bench/gpu_step.py --tiny     # a tiny shape, to check the script on a CPU
    python bench/gpu_step.py --record   # also write the rows into docs/figures.md (bench/figures.py)

Measures: optimizer-step time (forward + backward + AdamW, fp32 master weights under bf16 autocast) on
`--batch` sequences of `--seq` tokens, HF `generate` tokens/s for `--samples` x `--new-tokens` (bf16 weights), and
peak GPU memory. Prints the device name and a markdown row per measurement.
"""

from __future__ import annotations

import argparse
import time

import torch
from figures import add_record_flag, recording
from transformers import Qwen2Config, Qwen2ForCausalLM

QWEN25_MATH_1_5B = dict(vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                        num_key_value_heads=2, intermediate_size=8960, max_position_embeddings=4096,
                        tie_word_embeddings=True, rope_theta=10000.0)
TINY = dict(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=256, max_position_embeddings=512, tie_word_embeddings=True)


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    add_record_flag(parser, "gpu_step")
    args = parser.parse_args()
    with recording(args.record):
        run(args)


def run(args: argparse.Namespace) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    torch.manual_seed(0)
    config = Qwen2Config(**(TINY if args.tiny else QWEN25_MATH_1_5B))
    model = Qwen2ForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"# {name}; torch {torch.__version__}; {params / 1e9:.3f} B parameters", flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, kernels)
    seconds = min(timed(step, device) for _ in range(3))
    train_mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"| train step (bf16 autocast, fp32 AdamW) | {args.batch} x {args.seq} tokens | {seconds:.3f} s | "
          f"{args.batch * args.seq / seconds:,.0f} tokens/s | peak {train_mem:.1f} GiB |", flush=True)

    optimizer = None  # AdamW's state freed before generation
    model = model.to(torch.bfloat16).eval()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    prompt = torch.randint(0, config.vocab_size, (args.samples, 64), device=device)

    def generate() -> None:
        with torch.no_grad():
            model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=1.0,
                           top_k=0, pad_token_id=0)

    timed(generate, device)  # warm-up
    seconds = timed(generate, device)
    gen_mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"| HF generate (bf16) | {args.samples} x {args.new_tokens} new tokens | {seconds:.3f} s | "
          f"{args.samples * args.new_tokens / seconds:,.0f} tokens/s | peak {gen_mem:.1f} GiB |", flush=True)


if __name__ == "__main__":
    main()
