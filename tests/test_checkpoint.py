"""Checkpoint fingerprints: a checkpoint resumes only under the same code and the same params keys the stage's DVC
dependencies list (twogrpo.lineage), and across the settings that cannot change a result."""

import dataclasses

import pytest

from tools.setups import compose
from twogrpo.lineage import stage_fingerprint


@pytest.fixture(scope="module")
def params():
    return dataclasses.asdict(compose([])[1])


def train_key(params, ignore=(), **train):
    changed = params | {"train": params["train"] | train}
    return stage_fingerprint("train", "stages.train", changed, "weights", item={"arm": "g2-tuned", "seed": 0},
                             ignore=ignore)


def test_a_fingerprint_covers_the_listed_params_and_the_arm_not_other_arms_seeds_or_runtime(params):
    key = train_key(params)
    assert key == train_key(params)
    assert key != train_key(params, reference_lr=2e-3) != train_key(params, epochs=2)
    assert key != train_key(params, arms=params["train"]["arms"] | {"g2-tuned": {"group_size": 2,
                                                                                 "lr_scaling": "none",
                                                                                 "prompts_per_minibatch": 0,
                                                                                 "resample": False, "lr_factor": 3.0}})
    other_arm = params["train"]["arms"] | {"g16": {"group_size": 16, "lr_scaling": "none", "prompts_per_minibatch": 0,
                                                   "resample": False}}
    assert key == train_key(params, seeds=(0, 1, 2)) == train_key(params, arms=other_arm)
    runtime = params | {"runtime": params["runtime"] | {"checkpoint_every": 7, "gradient_checkpointing": True}}
    assert key == train_key(runtime)
    assert key != stage_fingerprint("train", "stages.train", params, "other weights",
                                    item={"arm": "g2-tuned", "seed": 0})


def test_a_fingerprint_covers_the_code_the_stage_imports(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "twogrpo").mkdir()
    (tmp_path / "stages" / "x.py").write_text("from twogrpo.used import f\n")
    (tmp_path / "twogrpo" / "used.py").write_text("def f(): return 1\n")
    (tmp_path / "twogrpo" / "unused.py").write_text("code = 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  x:\n    cmd: python -m stages.x\n    params: [a]\n")

    def key():
        return stage_fingerprint("x", "stages.x", {"a": 1, "b": 2}, root=tmp_path)

    before = key()
    (tmp_path / "twogrpo" / "unused.py").write_text("code = 2\n")
    assert key() == before  # a module the stage does not import
    (tmp_path / "twogrpo" / "used.py").write_text("def f(): return 2\n")
    assert key() != before  # a changed module: the old checkpoint is not resumed


def test_a_smaller_micro_batch_resumes_the_checkpoint_of_a_run_that_ran_out_of_memory(params):
    """Under token-mean the micro-batch sizes change only memory; under micro-token-mean they shape the result."""
    def key(**train):
        cfg = dataclasses.replace(compose([])[1].train, **train)
        return train_key(params, ignore=cfg.memory_only_keys, **train)

    assert key(loss_agg="token-mean", micro_batch_tokens=16384) == key(loss_agg="token-mean", micro_batch_tokens=4096) \
        == key(loss_agg="token-mean", micro_batch_rollouts=2)
    assert key(micro_batch_rollouts=64) != key(micro_batch_rollouts=256)  # the embedded default: micro-token-mean
    assert key(micro_batch_tokens=4096, micro_batch_rollouts=2) == key(micro_batch_tokens=4096)
    assert key(micro_batch_tokens=4096) != key(micro_batch_tokens=8192)
    assert key(precision="bfloat16") != key()


@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint", "foreign object"])
def test_an_unreadable_checkpoint_is_set_aside_with_a_warning_and_the_run_starts_clean(tmp_path, caplog, damage):
    import torch

    from twogrpo.checkpoint import Checkpoint

    checkpoint = Checkpoint("g2-s0", "fingerprint", root=tmp_path)
    checkpoint.save({"weights": torch.arange(1000.0)}, step=3)
    state = checkpoint.dir / "state.pt"
    if damage == "truncated":  # a copy cut off midway: torch.load's zip reader fails
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "not a checkpoint":
        state.write_text("hello")
    else:
        torch.save([1, 2, 3], state)
    assert checkpoint.load() is None
    assert f"{state} cannot be read" in caplog.text and "set aside in" in caplog.text
    (aside,) = tmp_path.glob("g2-s0.unreadable-*")
    assert not checkpoint.dir.exists() and (aside / "state.pt").exists() and str(aside) in caplog.text
    checkpoint.save({"weights": torch.zeros(2)}, step=1)  # the run starts clean and checkpoints again
    assert checkpoint.load()["step"] == 1


def test_every_result_shaping_train_setting_changes_the_fingerprint(params):
    """Each train setting declared RESULT (twogrpo.config.Role), changed alone, gives another fingerprint, so a
    checkpoint never resumes under another value of it (the fingerprint reads the list tools.deps generates)."""
    from twogrpo.config import Role, TrainConfig

    key = train_key(params)
    for name in TrainConfig.keys_with_role(Role.RESULT):
        field = name.removeprefix("train.")
        value = params["train"][field]
        other = {bool: lambda v: not v, str: lambda v: v + "x"}.get(type(value), lambda v: v + 1)(value)
        assert train_key(params, **{field: other}) != key, name
