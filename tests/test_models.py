"""A model folder that cannot be used is named, with what is wrong, before any work."""

import json

import pytest

from twogrpo.policy import load_policy, save_random_chat_model


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    save_random_chat_model(path)
    return path


def test_a_saved_model_loads(model_dir):
    model, tokenizer = load_policy(model_dir)
    assert tokenizer.chat_template and model.num_parameters() > 0


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no config.json"):
        load_policy(tmp_path / "nowhere")


def test_truncated_weights_are_named(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut off midway
    with pytest.raises(ValueError, match="incomplete or corrupt") as err:
        load_policy(model_dir)
    assert str(model_dir) in str(err.value)


def test_a_tokenizer_without_a_chat_template_is_named(model_dir):
    config = model_dir / "tokenizer_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    for extra in model_dir.glob("chat_template.*"):
        extra.unlink()
    with pytest.raises(ValueError, match="no chat template"):
        load_policy(model_dir)
