"""The policy: a Qwen2-architecture causal LM and its tokenizer, built offline or loaded with `from_pretrained`.

The embedded default builds a character-level tokenizer with `tokenizers` and a tiny Qwen2ForCausalLM from scratch;
both are saved in the hub's format, so the paper's models (Qwen2.5-Math) load through the same code.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from twogrpo.config import BaseConfig
from twogrpo.hub import hub_failure

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHARS = list("0123456789+-=\\boxed{}")
# One user message, rendered as its text: the tiny model needs no chat markup, but every prompt in the package goes
# through apply_chat_template, as the Qwen models' prompts do.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over the arithmetic alphabet, padding on the left for generation."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *dict.fromkeys(CHARS)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                        padding_side="left")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(cfg: BaseConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.scratch_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(config)


# ChatML, the format of the Qwen2.5 models' chat template.
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                   "'<|im_end|>\\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def save_random_chat_model(path: Path | str, seed: int = 0, max_positions: int = 8192,
                           corpus: Iterable[str] = ()) -> None:
    """A randomly initialised Qwen2 model with a byte-level BPE tokenizer and a ChatML chat template, saved in the hub's
    format: the stand-in for a hub model in dry runs of the paper's setups (it reads any text, solves nothing).

    Without a corpus the tokenizer has one token per byte. With one (the texts the dry run will read), it learns BPE
    merges from it, up to 4,096 tokens, as the hub models' tokenizers have theirs: a MATH prompt then takes about a
    third of the tokens, and a dry run's attention over the prompts a fraction of the time. Training is deterministic
    for the same texts in the same order."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate([*sorted(alphabet), *specials])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    texts = list(corpus)
    if texts:
        core.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=4096, special_tokens=specials, initial_alphabet=alphabet, show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=specials[1:2], padding_side="left")
    tokenizer.chat_template = CHATML_TEMPLATE
    # One layer of width 32: a stand-in solves nothing at any size, and a dry run then trains in seconds.
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def policy_device() -> torch.device:
    """This process's GPU when there is one (LOCAL_RANK under `accelerate launch`, else the first), else the CPU:
    where the policy trains and HF generation runs."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def load_policy(path: Path | str, revision: str | None = None,
                max_positions: int = 0) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A model in float32 on policy_device() and its tokenizer: from a saved folder (ours, or a hub model in the
    hub's format), or with a revision from the hub by id; `max_positions` > 0 sets its position limit."""
    if revision is None and not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json; not a saved model folder (run `dvc repro base`)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except OSError as error:  # from the hub: offline without a cached copy, a missing repo or revision
        if revision is None:
            raise
        raise ValueError(hub_failure("base.model", str(path), error)) from error
    if tokenizer.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat template; prompts are rendered with it")
    tokenizer.padding_side = "left"
    try:
        raised = {"max_position_embeddings": max_positions} if max_positions else {}
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch.float32, **raised)
    except Exception as error:  # a truncated safetensors file, a bad config.json, a missing weights file
        raise ValueError(f"{path}: the model cannot be loaded, its files are incomplete or corrupt "
                         f"({type(error).__name__}: {error}); rerun the stage that wrote it") from error
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):  # a token id past the embedding fails deep inside the forward pass, or reads garbage
        raise ValueError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's embedding only {rows} "
                         f"rows (vocab_size in config.json); use the tokenizer the model was trained with")
    return model.to(policy_device()), tokenizer


def render_prompts(tokenizer: PreTrainedTokenizerFast, problems: list[str], template: str) -> list[str]:
    """Each problem as one user message through the chat template, ready for generation."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": template.replace("{problem}", p)}],
                                      tokenize=False, add_generation_prompt=True)
        for p in problems
    ]


def check_encodes(tokenizer: PreTrainedTokenizerFast, prompts: list[str], template: str) -> list[list[int]]:
    """The prompts' token ids; stop when a prompt does not decode back to itself: a character the tokenizer lacks
    (the tiny model's knows only digits, + - = and \\boxed{}) would become an unknown token or vanish, and the model
    would see another prompt than the one asked for."""
    def same(decoded: str, text: str) -> bool:  # up to Unicode NFC, which Qwen2's tokenizer applies first
        return unicodedata.normalize("NFC", decoded) == unicodedata.normalize("NFC", text)

    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for prompt, decoded in zip(prompts, tokenizer.batch_decode(ids, clean_up_tokenization_spaces=False), strict=True):
        if not same(decoded, prompt):
            lost = [c for c in dict.fromkeys(prompt)
                    if not same(tokenizer.decode(tokenizer(c, add_special_tokens=False)["input_ids"]), c)]
            raise ValueError(f"the tokenizer cannot encode {''.join(lost)!r} in the prompt {prompt[:120]!r}: use a "
                             f"task.prompt_template={template!r} (and problems) in the tokenizer's alphabet")
    return ids


def check_context(tokenizer: PreTrainedTokenizerFast, positions: int, problems: list[str], template: str,
                  max_new_tokens: int, response_key: str) -> None:
    """Stop before any work when a prompt cannot be encoded (check_encodes), or when the longest prompt (rendered as
    render_prompts does) plus `max_new_tokens` exceeds the model's `positions`: HF would run past the positions it
    was trained on, vLLM would cut the response short, each differently."""
    ids = check_encodes(tokenizer, render_prompts(tokenizer, problems, template), template)
    longest = max(map(len, ids), default=0)
    if longest + max_new_tokens > positions:
        raise ValueError(f"the longest prompt ({longest} tokens) plus {response_key}={max_new_tokens} exceeds the "
                         f"model's {positions} positions (max_position_embeddings in models/base/config.json): raise "
                         f"base.max_position_embeddings (verl's practice for Qwen2.5-Math: 32768) or lower "
                         f"{response_key}")
