"""The base policy's SFT resumes from a snapshot exactly where an uninterrupted run goes (CPU)."""

import copy
import dataclasses

import torch

from tests.fixtures import BASE, TASK, chain_sums
from twogrpo.checkpoint import Checkpointing
from twogrpo.policy import build_char_tokenizer, build_tiny_model
from twogrpo.sft import padded_batch, sft_tokens, train_sft
from twogrpo.tasks import generate_problems

CFG = dataclasses.replace(BASE, max_steps=6, eval_every=2, target_accuracy=1.0, val_size=4)


def sft(train, val, every=0, resume=None, saved=None):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(CFG, tokenizer)
    checkpointing = Checkpointing(every, lambda state: saved.append(copy.deepcopy(state)), resume=resume)
    curve = train_sft(model, tokenizer, train, val, TASK.prompt_template, TASK.max_new_tokens, CFG, checkpointing)
    return model, curve


def test_sft_resumed_from_a_snapshot_ends_as_the_uninterrupted_run():
    train, _, _ = generate_problems(chain_sums(0, 40, 4, max_terms=2, max_digits=1))
    sft_rows, val = train.iloc[:-4], train.iloc[-4:]
    saved = []
    whole, curve = sft(sft_rows, val, every=CFG.eval_every, saved=saved)
    assert [state["step"] for state in saved] == [2, 4]  # after each measurement that does not stop (6 is the last)
    resumed, resumed_curve = sft(sft_rows, val, resume=saved[0])
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    columns = ["step", "loss", "val_accuracy"]
    assert resumed_curve[columns].equals(curve[columns])
    snapshot = saved[0]["model"]["lm_head.weight"]  # the resumed run trained on from there
    assert not torch.equal(snapshot, resumed.state_dict()["lm_head.weight"])


def test_a_batch_learns_only_the_target_and_its_eos_and_pads_on_the_right():
    tokenizer = build_char_tokenizer()
    prompts, targets = ["1+2=", "10+20="], ["3", "30"]
    pairs = sft_tokens(tokenizer, prompts, targets)
    assert pairs == [(tokenizer(p, add_special_tokens=False)["input_ids"],
                      tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
                     for p, t in zip(prompts, targets, strict=True)]  # one call for all, as one call for each
    batch = padded_batch(pairs, tokenizer.pad_token_id)
    (p0, t0), (p1, t1) = pairs
    width = len(p1) + len(t1)
    assert batch["input_ids"].tolist() == [p0 + t0 + [tokenizer.pad_token_id] * (width - len(p0 + t0)), p1 + t1]
    assert batch["labels"].tolist() == [[-100] * len(p0) + t0 + [-100] * (width - len(p0 + t0)),
                                        [-100] * len(p1) + t1]
    assert batch["attention_mask"].sum(1).tolist() == [len(p0 + t0), width]
