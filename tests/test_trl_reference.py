"""Differential test: our GRPO loss and its gradient equal TRL's GRPOTrainer (trl==1.16.0) on the same batch.

Matching settings: TRL `grpo` = our seq-mean-token-mean, `bnpo` = token-mean, `dr_grpo` = seq-mean-token-sum-norm
with horizon max_completion_length; TRL has no dual clip, so ours is set out of reach (clip_ratio_c = 1e9); TRL's
KL (beta) is the same k3 estimator as verl's low_var_kl once TRL's importance-weighting of it
(use_bias_correction_kl, on by default) is off, as verl has none; both run in float32.
"""

import pytest
import torch
import trl
from datasets import Dataset

from tests.fixtures import BASE
from twogrpo import grpo
from twogrpo.policy import build_char_tokenizer, build_tiny_model

MODES = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm"}
HORIZON = 6


def batch(tokenizer):
    """Four rollouts of two prompts of equal length (no prompt padding), completions right-padded with a mask."""
    torch.manual_seed(0)
    prompt = torch.tensor([tokenizer("12+3=", add_special_tokens=False)["input_ids"]] * 2
                          + [tokenizer("45-6=", add_special_tokens=False)["input_ids"]] * 2)
    completion = torch.randint(3, len(tokenizer), (4, HORIZON))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3, [1] * 5 + [0]])
    advantages = grpo.group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, 1e-4)
    return prompt, completion, mask, advantages


def trl_trainer(tmp_path, loss_type, beta):
    """A GRPOTrainer over our tiny policy, loaded from a saved folder as TRL loads hub models (and its reference)."""
    tokenizer = build_char_tokenizer()
    build_tiny_model(BASE, tokenizer).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=HORIZON, temperature=1.0, loss_type=loss_type, beta=beta,
                          epsilon=0.2, epsilon_high=0.28, report_to=[], use_cpu=True, logging_steps=1,
                          bf16=False, fp16=False, use_bias_correction_kl=False)
    trainer = trl.GRPOTrainer(model=str(tmp_path / "policy"), args=args, processing_class=tokenizer,
                              reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                              train_dataset=Dataset.from_dict({"prompt": ["1+2="] * 4}))
    trainer.current_gradient_accumulation_steps = 1
    return trainer, tokenizer


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: torch.Tensor, width: int,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, width] log-probs and entropies of each right-padded row's response window (response_start: [N]), through
    the trainer's own pieces (values past a row's end are meaningless and must be masked)."""
    hidden = grpo.final_hidden_states(model, input_ids, attention_mask)  # [N, L, H]
    # Each row's window [start-1, start-1+width) of predicting positions.
    index = (response_start - 1).unsqueeze(1) + torch.arange(width, device=input_ids.device).unsqueeze(0)
    index = index.clamp(max=hidden.shape[1] - 1)  # [N, width]
    targets = input_ids.gather(1, (index + 1).clamp(max=input_ids.shape[1] - 1))  # [N, width]
    window = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [N, width, H]
    logp, entropy = grpo.head_logprobs(grpo.output_layer(model), window.flatten(0, 1), targets.flatten(), entropy_grad)
    return logp.view(targets.shape), entropy.view(targets.shape)


def our_loss(model, prompt, completion, mask, advantages, old, ref, mode, beta):
    ids = torch.cat([prompt, completion], 1)
    attention = torch.cat([torch.ones_like(prompt), mask], 1)
    start = torch.full((4,), prompt.shape[1])
    logp, _ = token_logprobs(model, ids, attention, start, HORIZON)
    terms, _ = grpo.policy_loss_terms(logp, old, advantages, 0.2, 0.28, clip_ratio_c=1e9)
    m = mask.float()
    loss = grpo.aggregate(terms, m, mode, 4, int(m.sum()), HORIZON)
    if beta:
        loss = loss + beta * grpo.aggregate(grpo.low_var_kl(logp, ref), m, mode, 4, int(m.sum()), HORIZON)
    return loss


@pytest.mark.parametrize("beta", [0.0, 0.05])
@pytest.mark.parametrize("loss_type", sorted(MODES))
def test_loss_and_gradient_equal_trl(tmp_path, loss_type, beta):
    trainer, tokenizer = trl_trainer(tmp_path, loss_type, beta)
    model = trainer.model.float().train()
    prompt, completion, mask, advantages = batch(tokenizer)
    # Old and reference log-probs off the current policy, so ratios leave the clip range on both sides.
    with torch.no_grad():
        ids = torch.cat([prompt, completion], 1)
        current, _ = token_logprobs(model, ids, torch.ones_like(ids), torch.full((4,), prompt.shape[1]), HORIZON)
    noise = torch.randn(current.shape, generator=torch.Generator().manual_seed(1))
    old, ref = current + 0.3 * noise, current - 0.2 * noise
    inputs = {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
              "completion_mask": mask, "advantages": advantages, "old_per_token_logps": old,
              "ref_per_token_logps": ref}

    reference = trainer._compute_loss(model, inputs)
    reference.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ours = our_loss(model, prompt, completion, mask, advantages, old, ref, MODES[loss_type], beta)
    ours.backward()

    assert ours.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-7)
    for got, want in zip((p.grad for p in model.parameters()), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    ratio = (current - old).exp()[mask.bool()]
    assert (ratio > 1.28).any() and (ratio < 0.8).any()  # both clip sides were exercised
