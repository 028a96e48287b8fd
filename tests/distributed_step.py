"""One GRPO optimizer step on a fixed batch of rollouts, in one process or, under `accelerate launch`, split over
several (weights replicated, or sharded with an FSDP config); the first process saves the weights before and after
to argv[1]. Run by tests/test_distributed.py."""

import dataclasses
import sys

import torch

from tests.fixtures import BASE, TRAIN
from twogrpo.distributed import Dist, full_state_dict, is_sharded, local_value
from twogrpo.forward import Forward, frozen_logprobs
from twogrpo.policy import build_char_tokenizer, build_tiny_model
from twogrpo.sampling import Samples
from twogrpo.trainer import GenerationBatch, Learner, Scored, update_minibatch

GROUPS, G = 8, 4


def fixed_rollouts(vocab: int) -> tuple[Samples, torch.Tensor]:
    """8 prompts x 4 responses of varied lengths, with rewards that make some groups mixed and some dead."""
    rng = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, vocab, (int(torch.randint(3, 9, (1,), generator=rng)),), generator=rng).tolist()
               for _ in range(GROUPS)]
    responses = [torch.randint(4, vocab, (int(torch.randint(1, 7, (1,), generator=rng)),), generator=rng).tolist()
                 for _ in range(GROUPS * G)]
    samples = Samples([prompts[i // G] for i in range(GROUPS * G)], responses, [""] * (GROUPS * G),
                      [False] * (GROUPS * G))
    # Groups 4, 5 and 6 all wrong (dead): over 2 processes the second keeps 1 live group, the first 4.
    rewards = torch.tensor([float((i * 7 + i // G) % 3 == 0 and not 4 <= i // G <= 6) for i in range(GROUPS * G)])
    return samples, rewards


def main(out: str, *changes: str) -> None:
    """changes: `key=value` settings of the step (precision=bfloat16, micro_batch_tokens=40,
    loss_agg=micro-token-mean: every rollout runs, as verl's full pass; balance_batch=true)."""
    dist = Dist.from_environment()
    step(dist, out, dict(change.split("=") for change in changes))
    dist.close()  # after step() has released the model (Dist.close)


def step(dist: Dist, out: str, changes: dict[str, str]) -> None:
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(BASE, tokenizer)
    # 4 rollouts per forward/backward: the processes run different numbers of micro-batches once dead groups are
    # skipped (the first 4, the second 1), as a paper setup's processes do (8 rollouts per micro-batch); sharded,
    # the second pads its forward and backward passes to 4.
    loss_agg = changes.get("loss_agg", "token-mean")
    cfg = dataclasses.replace(TRAIN, micro_batch_rollouts=4, precision=changes.get("precision", "float32"),
                              micro_batch_tokens=int(changes.get("micro_batch_tokens", 0)), loss_agg=loss_agg,
                              skip_dead_groups=loss_agg == "token-mean")
    samples, rewards = fixed_rollouts(len(tokenizer))
    groups = dist.share(GROUPS, GROUPS) if dist.world > 1 else list(range(GROUPS))
    rows = [g * G + j for g in groups for j in range(G)]
    batch = GenerationBatch.of(samples.select(rows), rewards[rows], cfg, G, len(groups), torch.device("cpu"))
    if changes.get("balance_batch") == "true":
        batch = batch.balanced(cfg, dist)
    local, live = batch.samples, batch.updated[0]
    forward = Forward.of(cfg)
    # This process's own count of micro-batches by token budget, and the count it cuts (collective: all processes)
    local_tokens = sum(len(p) + len(r) for p, r in zip(local.prompt_ids, local.response_ids, strict=True))
    counts = (-(-local_tokens // forward.tokens),
              len(forward.split(local, live))) if forward.tokens else None
    share = (len(local.texts), sum(len(p) + len(r) for p, r in zip(local.prompt_ids, local.response_ids, strict=True)))
    pad = tokenizer.pad_token_id
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameters = [name for name, _ in model.named_parameters()]  # the trained tensors: a tied one once
    trained = dist.prepare(model, cfg.precision)  # DDP, or FSDP sharding `model` in place
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2, weight_decay=0.01)
    old_logp = frozen_logprobs(model, local, forward, pad, live)
    sizes = dist.sum([len(local.texts), local.num_tokens])
    stats = update_minibatch(Learner(trained, optimizer, cfg, horizon=6, pad=pad, dist=dist),
                             Scored(local, batch.advantages, old_logp), live, minibatch=(int(sizes[0]), int(sizes[1])))
    after = full_state_dict(model)  # gathered when sharded: every process takes part
    grads = {name: local_value(p.grad) for name, p in model.named_parameters()}
    counts, shares = dist.gather_objects(counts), dist.gather_objects(share)
    if dist.is_main:
        torch.save({"before": before, "after": after, "grads": grads, "sharded": is_sharded(model),
                    "micro_batch_counts": counts, "shares": shares, "update_size": stats["update_size"],
                    "parameters": parameters}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
