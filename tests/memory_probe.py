"""Updates of a random Qwen2 at a given shape, in this process: the old log-probs, then two optimizer steps (forward,
backward, AdamW) over one mini-batch (twogrpo.trainer), on the CPU. Prints, as JSON, the peak resident memory it added
above the process after its imports, and the planner's estimate for the same shape (twogrpo.plan).

Run in a fresh process per shape (tests/test_plan.py, bench/update_memory.py) with MALLOC_MMAP_THRESHOLD_ fixed, so
that glibc returns freed tensors to the system and the resident set follows the live tensors.
`--full-logits` computes the log-probs as the trainer did before chunking: every position's full-vocabulary logits.
"""

import argparse
import dataclasses
import json
import resource

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import twogrpo.forward as forward
import twogrpo.trainer as trainer
from tests.fixtures import TRAIN
from twogrpo.plan import ModelShape, Workload, phase_memory
from twogrpo.sampling import Samples


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def full_logits(model, batch, entropy_grad=False):
    """The log-probs of every position's full-vocabulary logits at once, as before chunking (padded batches)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    rows, cols = batch.where
    positions = batch.predict - rows * batch.input_ids.shape[1]  # flat (row-major) -> within the row
    logp_all = torch.log_softmax(logits[rows, positions], dim=-1)
    logp = logp_all.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    zeros = batch.response_mask.new_zeros(batch.response_mask.shape)
    return zeros.index_put(batch.where, logp), zeros.index_put(batch.where, entropy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name, default in (("vocab", 151936), ("hidden", 64), ("layers", 2), ("heads", 2), ("kv-heads", 1),
                          ("intermediate", 128), ("rollouts", 8), ("prompt-tokens", 64), ("response-tokens", 192),
                          ("micro-batch-rollouts", 8), ("micro-batch-tokens", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--full-logits", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    shape = ModelShape(vocab=args.vocab, hidden=args.hidden, intermediate=args.intermediate, layers=args.layers,
                       heads=args.heads, kv_heads=args.kv_heads, tied=True, positions=args.prompt_tokens +
                       args.response_tokens)
    cfg = dataclasses.replace(TRAIN, micro_batch_rollouts=args.micro_batch_rollouts,
                              micro_batch_tokens=args.micro_batch_tokens)
    if args.full_logits:
        trainer.logprobs = forward.logprobs = full_logits  # the update's and the old log-probs' forward passes
    baseline = resident_bytes()

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape.config()))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    ids = torch.randint(1, shape.vocab, (args.rollouts, args.prompt_tokens + args.response_tokens)).tolist()
    samples = Samples([r[: args.prompt_tokens] for r in ids], [r[args.prompt_tokens:] for r in ids],
                      [""] * args.rollouts, [False] * args.rollouts)
    rows = list(range(args.rollouts))
    old = forward.frozen_logprobs(model, samples, forward.Forward.of(cfg), 0)
    advantages = torch.tensor([1.0, -1.0] * (args.rollouts // 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    for _ in range(2):  # the second step is a run's steady state: AdamW's moments exist from the first step on
        trainer.update_minibatch(trainer.Learner(model, optimizer, cfg, horizon=args.response_tokens, pad=0),
                                 trainer.Scored(samples, advantages, old), rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline

    micro = min(args.micro_batch_rollouts, args.rollouts)
    work = Workload(gpus=1, sharded=False, precision="float32", gradient_checkpointing=args.gradient_checkpointing,
                    micro_batch_tokens=args.micro_batch_tokens or micro * (args.prompt_tokens + args.response_tokens),
                    response_tokens=micro * args.response_tokens,
                    vllm_fraction=0.0, gpu_memory=0)
    estimate = max(sum(parts.values()) for phase, parts in phase_memory(shape, work).items() if phase != "generation")
    print(json.dumps({"measured": peak, "estimate": estimate, "parameters": shape.parameters}))


if __name__ == "__main__":
    main()
