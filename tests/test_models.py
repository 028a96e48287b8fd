"""A model folder that cannot be used is named, with what is wrong, before any work."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from twogrpo.policy import check_context, load_policy, render_prompts, save_random_chat_model


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


def test_prompt_plus_response_beyond_the_positions_stops_unless_the_limit_is_raised(tmp_path, monkeypatch):
    """As Qwen2.5-Math (4,096 positions, 4,096-token responses): a model with fewer positions than prompt + response
    is refused, naming the setting; the base stage's override raises the limit in the saved model, which both
    engines then read."""
    from stages.base import save_pretrained_base
    from tests.fixtures import BASE

    save_random_chat_model(tmp_path / "hub", max_positions=64)
    model, tokenizer = load_policy(tmp_path / "hub")
    problems, template = ["What is 12 + 30?", "1 + 1"], "{problem} Think step by step."
    first = render_prompts(tokenizer, problems[:1], template)[0]
    longest = len(tokenizer(first, add_special_tokens=False)["input_ids"])
    check_context(tokenizer, model.config.max_position_embeddings, problems, template, 64 - longest,
                  "task.max_new_tokens")
    with pytest.raises(ValueError, match=rf"longest prompt \({longest} tokens\) plus task.max_new_tokens=48 exceeds "
                                         rf"the model's 64 positions.*raise base.max_position_embeddings"):
        check_context(tokenizer, model.config.max_position_embeddings, problems, template, 48, "task.max_new_tokens")

    monkeypatch.chdir(tmp_path)
    save_pretrained_base(dataclasses.replace(BASE, model=str(tmp_path / "hub"), max_position_embeddings=256))
    assert json.loads(Path("models/base/config.json").read_text())["max_position_embeddings"] == 256
    recorded = json.loads(Path("metrics/base.json").read_text())
    assert recorded["max_position_embeddings"] == 256 and recorded["positions_raised"]
    raised, _ = load_policy("models/base")
    check_context(tokenizer, raised.config.max_position_embeddings, problems, template, 48, "task.max_new_tokens")
    torch.testing.assert_close(raised.state_dict(), model.state_dict())  # the weights are untouched
    with pytest.raises(ValueError, match="base.max_position_embeddings=32 would lower .*64 positions"):
        save_pretrained_base(dataclasses.replace(BASE, model=str(tmp_path / "hub"), max_position_embeddings=32))


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(5)])  # ids past the embedding's rows
    tokenizer.save_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"the tokenizer has \d+ tokens but the model's embedding only \d+ rows"):
        load_policy(model_dir)


def test_a_prompt_the_tokenizer_cannot_encode_is_refused_naming_the_characters():
    """The tiny model's character tokenizer knows digits, + - = and \\boxed{}: a template in words would reach the
    model as unknown tokens."""
    from twogrpo.policy import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    check_context(tokenizer, 128, ["1+2"], "{problem}=", 8, "task.max_new_tokens")
    with pytest.raises(ValueError, match=r"cannot encode 'Slv: ' in the prompt 'Solve: 1\+2': use a "
                                         r"task.prompt_template='Solve: {problem}'"):
        check_context(tokenizer, 128, ["1+2"], "Solve: {problem}", 8, "task.max_new_tokens")


@pytest.mark.parametrize(("code", "names"), [
    ("from twogrpo.policy import load_policy; load_policy('nobody-here/no-model', revision='main')",
     "base.model='nobody-here/no-model' is no folder here, and is not in the local hub cache"),
    ("from twogrpo.config import SourceConfig; from twogrpo.mathdata import load_rows; "
     "load_rows('math500', SourceConfig('nobody-here/no-data', '', 'test', 'main', ''), '')",
     "prepare.sources.math500.hub='nobody-here/no-data' is not in the local hub cache"),
])
def test_a_hub_model_or_dataset_missing_offline_names_the_variables_and_the_local_option(code, names):
    """The stages are offline by default (set by the `stages` package before the hub libraries read it): a hub
    name not cached here fails at once, naming HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 and the local alternative."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", f"import stages; {code}"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode != 0 and names in result.stderr
    assert "HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0" in result.stderr
    assert ("prepare.local_root" if "prepare" in names else "a local folder in the hub's format") in result.stderr


def test_a_tokenizer_that_normalises_unicode_encodes_a_decomposed_character(model_dir):
    """Qwen2's tokenizer applies NFC first: 'e' + a combining accent comes back as one 'é', the same text."""
    from tokenizers import normalizers

    _, tokenizer = load_policy(model_dir)
    tokenizer.backend_tokenizer.normalizer = normalizers.NFC()
    problem = "Is cafe\u0301 a word?"
    assert tokenizer.decode(tokenizer(problem, add_special_tokens=False)["input_ids"]) == "Is caf\u00e9 a word?"
    check_context(tokenizer, 8192, [problem], "{problem}", 8, "task.max_new_tokens")
