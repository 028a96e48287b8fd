"""The training loop's bookkeeping and variants on a tiny random policy (real HF generation and math-verify)."""

import copy
import dataclasses

import pandas as pd
import pytest
import torch

from tests.fixtures import BASE, EVAL, TASK, TRAIN
from twogrpo.checkpoint import Checkpointing
from twogrpo.config import ArmConfig
from twogrpo.engine import HFEngine
from twogrpo.forward import Forward
from twogrpo.policy import build_char_tokenizer, build_tiny_model
from twogrpo.rollouts import PromptStream
from twogrpo.schemas import TrainSteps, validate
from twogrpo.trainer import NonFiniteError, Policy, TrainData, TrainRun, train_grpo


def tiny_grpo(model, tokenizer, problems, run: TrainRun, **options):
    """GRPO on the tiny problems (train, validation, test) with the HF engine."""
    data = TrainData(train=problems[0], validation=problems[1])
    return train_grpo(run, Policy(model, tokenizer, HFEngine(model, tokenizer)), data, **options)


def run(problems, arm, checkpointing=False, checkpointing_to=None, checkpoint_every=0, **changes):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(BASE, tokenizer)
    if checkpointing:
        model.gradient_checkpointing_enable()
    cfg = dataclasses.replace(TRAIN, **changes)
    saving = None if checkpointing_to is None else Checkpointing(checkpoint_every, checkpointing_to.append)
    ledger = tiny_grpo(model, tokenizer, problems, TrainRun(TASK, cfg, arm, EVAL, 0), checkpointing=saving)
    return validate(ledger, TrainSteps, "ledger"), model


def test_budget_counters_follow_the_arm(problems):
    ledger, _ = run(problems, ArmConfig(4, "linear"))
    last = ledger.iloc[-1]
    assert last["gen_step"] == 2 and last["prompts_seen"] == 16 and last["epoch"] == 0
    assert last["rollouts"] == 16 * 4 and last["opt_steps"] == 2 * (8 // 4)  # 8 prompts per step, 4 per mini-batch
    assert last["rs_budget_used"] == 1.0  # the reference arm uses exactly its budget
    assert ledger["eval_accuracy"].notna().tolist() == [True, False, True]  # eval_every=2, and the last step
    assert ledger["eval_kl"].notna().tolist() == [True, False, True]
    assert ledger["eval_kl"].iloc[0] == 0.0 < ledger["eval_kl"].iloc[-1]  # the base itself, then the trained policy
    assert (ledger["time_update"].diff().dropna() > 0).all()


def test_gradient_checkpointing_changes_memory_not_the_result(problems):
    _, plain = run(problems, ArmConfig(4, "linear"))
    _, checkpointed = run(problems, ArmConfig(4, "linear"), checkpointing=True)
    assert checkpointed.is_gradient_checkpointing
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_skipping_dead_groups_changes_the_work_not_the_result(problems):
    """Dead groups (zero advantage) give exactly zero gradient: updating on the informative groups only ends with
    the weights of the full pass (float rounding aside: other batch shapes) and runs fewer rows through the update."""
    rows_with_grad = {}

    def count(model, args, kwargs):
        if torch.is_grad_enabled():
            rows_with_grad[skip] += kwargs["input_ids"].shape[0]

    models, ledgers = {}, {}
    for skip in (False, True):
        rows_with_grad[skip] = 0
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(BASE, tokenizer)
        model.register_forward_pre_hook(count, with_kwargs=True)
        cfg = dataclasses.replace(TRAIN, skip_dead_groups=skip)
        ledgers[skip] = tiny_grpo(model, tokenizer, problems, TrainRun(TASK, cfg, ArmConfig(2, "linear"), EVAL, 0))
        models[skip] = model
    assert ledgers[True]["dead_group_frac"].iloc[1:].gt(0).all()  # there were dead groups to skip
    assert rows_with_grad[True] < rows_with_grad[False] == 16 * 2  # 16 prompts x G = 2, each updated once
    pd.testing.assert_series_equal(ledgers[True]["mean_reward"], ledgers[False]["mean_reward"])  # same rollouts
    for (name, a), b in zip(models[False].state_dict().items(), models[True].state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=name)


def test_ppo_epochs_repeat_the_passes(problems):
    ledger, _ = run(problems, ArmConfig(4, "linear"), ppo_epochs=2)
    assert ledger.iloc[-1]["opt_steps"] == 2 * 2 * 2


def test_fixed_prompts_per_minibatch_for_the_ablation(problems):
    ledger, _ = run(problems, ArmConfig(2, "linear", prompts_per_minibatch=4))
    assert ledger.iloc[-1]["opt_steps"] == 2 * (8 // 4) and ledger.iloc[-1]["rollouts"] == 16 * 2


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_an_sgd_arm_steps_by_the_rate_times_the_gradient(problems, optimizer):
    """Plain SGD (the ladder's probe of Adam's step): an update is the rate times the (clipped) gradient, with no
    momentum and no weight decay, so the last update's length is lr x its gradient's norm. AdamW's at the same rate is
    not: it moves each weight by about the rate."""
    arm = ArmConfig(4, "linear", prompts_per_minibatch=8, optimizer=optimizer)  # one update per generation step
    ledger, model = run(problems, arm, weight_decay=0.01)
    last = ledger.iloc[-1]
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).double().norm().item()
    length = last["update_size"] * weights
    gradient_step = last["lr"] * min(last["grad_norm"], TRAIN.grad_clip)
    if optimizer == "sgd":
        assert length == pytest.approx(gradient_step, rel=1e-3)
    else:
        assert length > 2 * gradient_step


def test_resampling_replaces_dead_groups_within_the_reference_budget(problems):
    plain, _ = run(problems, ArmConfig(2, "none"))
    rs, _ = run(problems, ArmConfig(2, "none", resample=True))
    # A random policy is nearly always wrong: most groups are dead and get replaced, up to 16-GRPO's budget.
    assert plain["dead_group_frac"].iloc[1:].mean() > 0.5
    assert rs.iloc[-1]["rollouts"] > plain.iloc[-1]["rollouts"]
    assert rs.iloc[-1]["rollouts"] <= TRAIN.step_rollout_cap * 2
    assert rs.iloc[-1]["rs_budget_used"] <= 1.0
    assert rs.iloc[-1]["prompts_seen"] * 2 == rs.iloc[-1]["rollouts"]  # every drawn prompt made one group
    assert rs.iloc[-1]["opt_steps"] == plain.iloc[-1]["opt_steps"]  # the optimisation cost is 2-GRPO's
    # Our choice (not verl's DAPO recipe, whose epochs end sooner): the same generation steps and schedule as the
    # other arms; the refills come from the same prompt stream, so 2-GRPO+RS reaches further into the epochs.
    assert rs["gen_step"].tolist() == plain["gen_step"].tolist()
    assert rs.iloc[-1]["prompts_seen"] > plain.iloc[-1]["prompts_seen"] == 16
    assert rs.iloc[-1]["epoch"] > plain.iloc[-1]["epoch"] == 0


def test_kl_and_entropy_are_logged_and_the_kl_is_off_by_default(problems):
    off, _ = run(problems, ArmConfig(4, "linear"))
    on, _ = run(problems, ArmConfig(4, "linear"), kl_coef=0.1, entropy_coef=0.01)
    assert off["kl"].isna().all()
    assert (on["kl"].iloc[1:] >= 0).all()
    assert (on["entropy"].iloc[1:] > 0).all() and (on["grad_norm"].iloc[1:] >= 0).all()


def test_entropy_bonus_changes_the_update(problems):
    _, plain = run(problems, ArmConfig(4, "linear"))
    _, bonus = run(problems, ArmConfig(4, "linear"), entropy_coef=0.5)
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), bonus.parameters(), strict=True))


def test_prompt_stream_gives_each_prompt_once_per_epoch():
    stream = PromptStream(10, seed=3)
    first, second = stream.take(10), stream.take(10)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert stream.drawn == 20


def test_prompt_stream_reshuffles_every_epoch_and_drops_the_last_incomplete_batch_as_verl():
    stream = PromptStream(10, seed=3, batch=4)  # 2 batches of 4 per epoch: 2 prompts left out of each
    epochs = [stream.take(8) for _ in range(6)]
    assert all(len(set(epoch)) == 8 for epoch in epochs)
    assert len({frozenset(range(10)) - set(epoch) for epoch in epochs}) > 1  # a different remainder each epoch
    assert set().union(*epochs) == set(range(10))  # every problem seen over the epochs
    assert PromptStream(10, seed=3, batch=4).take(8) == epochs[0]
    assert PromptStream(10, seed=4, batch=4).take(8) != epochs[0]  # the order follows the seed


def test_verls_order_is_torchs_random_sampler_batch_for_batch_the_same_for_every_run():
    """verl's dataloader: RandomSampler(generator=torch.Generator().manual_seed(data.seed)), drop_last batches, one
    iteration per epoch (verl/trainer/main_ppo.py create_rl_sampler, ray_trainer.py)."""
    sampler = torch.utils.data.RandomSampler(range(10), generator=torch.Generator().manual_seed(1))
    loader = torch.utils.data.DataLoader(range(10), batch_size=4, sampler=sampler, drop_last=True)
    verl = [batch.tolist() for _ in range(5) for batch in loader]
    for seed in (0, 7):
        stream = PromptStream(10, seed, batch=4, data_seed=1)
        assert [stream.take(4) for _ in range(10)] == verl
    assert PromptStream(10, 0, batch=4, data_seed=2).take(8) != verl[0] + verl[1]
    stream = PromptStream(10, 0, batch=4, data_seed=1)  # resumed from its state: the same batches follow
    stream.take(12)
    resumed = PromptStream(10, 0, batch=4, data_seed=1)
    resumed.restore(stream.state())
    assert [resumed.take(4) for _ in range(7)] == verl[3:]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_paper_setups_see_every_math_problem_over_their_ten_epochs(seed):
    """MATH's 7,497 problems in generation batches of 512: 14 batches an epoch, 329 problems left out of each."""
    stream = PromptStream(7497, seed, batch=512)
    seen = [stream.take(512 * 14) for _ in range(10)]
    assert stream.epoch_size == 7168 and set().union(*seen) == set(range(7497))


@pytest.mark.parametrize("changes", [{"loss_agg": "seq-mean-token-mean"}, {"loss_agg": "seq-mean-token-sum-norm"},
                                     {"clip_high": 0.0001}, {"kl_coef": 1.0}])
def test_each_objective_knob_reaches_the_update(changes):
    """One optimizer step on fixed rollouts with mixed advantages: changing a knob changes the weights."""
    from twogrpo.forward import frozen_logprobs
    from twogrpo.sampling import Samples
    from twogrpo.trainer import Learner, Scored, update_minibatch

    tokenizer = build_char_tokenizer()
    samples = Samples(prompt_ids=[[5, 6, 14]] * 4, response_ids=[[7, 8, 1], [9, 1], [7, 7, 7, 1], [4, 1]],
                      texts=[""] * 4, truncated=[False] * 4)
    advantages = torch.tensor([1.0, -1.0, 0.7, -0.7])

    def step(cfg):
        model = build_tiny_model(BASE, tokenizer)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        # ratio 1.105: clip_high can bind
        old = frozen_logprobs(model, samples, Forward(4), tokenizer.pad_token_id) - 0.1
        ref = old + 0.5 if cfg.kl_coef else None
        learner = Learner(model, optimizer, cfg, horizon=6, pad=tokenizer.pad_token_id)
        update_minibatch(learner, Scored(samples, advantages, old, ref), [0, 1, 2, 3])
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert not torch.allclose(step(TRAIN), step(dataclasses.replace(TRAIN, **changes)))


def test_resuming_from_a_snapshot_ends_where_an_uninterrupted_run_ends(problems):
    """Every piece of run state is in the snapshot: continue from step 2 of 4 in a fresh process-like setup (new
    model from the same base, RNGs moved on) and the final weights and ledger equal the uninterrupted run's."""
    arm = ArmConfig(2, "none", resample=True)  # resampling draws extra prompts: the stream position matters
    cfg = dataclasses.replace(TRAIN, epochs=2, weight_decay=0.01)
    saved = []

    def train(resume=None):
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(BASE, tokenizer)
        keep = Checkpointing(1, lambda state: saved.append(copy.deepcopy(state)), resume=resume)
        ledger = tiny_grpo(model, tokenizer, problems, TrainRun(TASK, cfg, arm, EVAL, 0), checkpointing=keep)
        return ledger, model

    whole, model = train()
    assert [s["gen_step"] for s in saved] == [1, 2, 3]  # none after the last step
    torch.manual_seed(123)  # a new process starts from other RNG states
    resumed, again = train(resume=saved[1])
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    counters = ["gen_step", "prompts_seen", "rollouts", "tokens", "opt_steps", "mean_reward", "eval_accuracy"]
    pd.testing.assert_frame_equal(whole[counters], resumed[counters])


def test_a_nan_loss_stops_training_with_the_step_named(problems):
    """A NaN injected into the logits of the update's forward pass only (train mode; sampling runs in eval mode)."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(BASE, tokenizer)
    model.lm_head.register_forward_hook(lambda module, args, out: out * float("nan") if module.training else out)
    with pytest.raises(NonFiniteError, match="generation step 1: the loss is nan") as error:
        tiny_grpo(model, tokenizer, problems, TrainRun(TASK, TRAIN, ArmConfig(4, "linear"), EVAL, 0))
    assert f"train.reference_lr={TRAIN.reference_lr:g}" in str(error.value)  # the settings most likely at fault
    assert "train.grad_clip=" in str(error.value) and "train.adv_eps=" in str(error.value)


def test_same_seed_same_run_and_another_seed_other_rollouts(problems):
    """On the CPU with the HF engine a run is a function of its seed: bit-identical weights and ledger for the same
    seed; another seed draws other prompts and other samples."""
    def train(seed):
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(BASE, tokenizer)
        cfg = dataclasses.replace(TRAIN, weight_decay=0.01)
        ledger = tiny_grpo(model, tokenizer, problems, TrainRun(TASK, cfg, ArmConfig(2, "none"), EVAL, seed))
        return ledger, model.state_dict()

    (a, wa), (b, wb), (c, wc) = train(0), train(0), train(1)
    counters = ["rollouts", "tokens", "mean_reward", "dead_group_frac", "eval_accuracy", "entropy", "grad_norm"]
    pd.testing.assert_frame_equal(a[counters], b[counters])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["tokens"].tolist() != c["tokens"].tolist() or a["mean_reward"].tolist() != c["mean_reward"].tolist()
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_out_of_memory_in_the_update_names_the_micro_batch_budget_and_keeps_the_checkpoint(problems, monkeypatch):
    import twogrpo.trainer as trainer

    real, calls, saved = trainer.update_minibatch, [], []

    def update_then_run_out(*args, **kwargs):  # fault injection: the third optimizer step runs out of memory
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "update_minibatch", update_then_run_out)
    with pytest.raises(torch.OutOfMemoryError, match=r"step 2, update.*lower train\.micro_batch_rollouts=8"):
        run(problems, ArmConfig(4, "linear"), checkpoint_every=1, checkpointing_to=saved)
    assert [state["gen_step"] for state in saved] == [1]  # step 1's checkpoint, nothing of the failed step
