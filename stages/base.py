"""base: the base policy, a tiny Qwen2 model trained from scratch by SFT until it solves part of the problems.

Reads: data/prepared/train.parquet; params `base`, `task`.
Writes: models/base/ (save_pretrained model and tokenizer with its chat template), metrics/base.json (SFT curve).
The last `base.val_size` train problems are held out of SFT and measure the stopping accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path

from twogrpo.io import atomic_path, write_json
from twogrpo.policy import build_char_tokenizer, build_tiny_model
from twogrpo.run import start_stage
from twogrpo.schemas import Problems, read_table
from twogrpo.sft import train_sft

MODEL_DIR = Path("models/base")
METRICS = Path("metrics/base.json")
log = logging.getLogger("base")


def main() -> None:
    params = start_stage("base")
    cfg = params.base
    train = read_table("data/prepared/train.parquet", Problems)
    sft_rows, val_rows = train.iloc[: -cfg.val_size], train.iloc[-cfg.val_size:]
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg, tokenizer)
    log.info("tiny Qwen2: %d parameters, head_dim %d", model.num_parameters(), cfg.head_dim)
    curve = train_sft(model, tokenizer, sft_rows, val_rows, params.task.prompt_template, params.task.max_new_tokens,
                      cfg)
    with atomic_path(MODEL_DIR) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    last = curve.iloc[-1]
    write_json({"parameters": model.num_parameters(), "sft_steps": int(last["step"]),
                "val_accuracy": float(last["val_accuracy"]), "sft_seconds": float(last["seconds"]),
                "reached_target": bool(last["val_accuracy"] >= cfg.target_accuracy),
                "curve": curve.to_dict(orient="records")}, METRICS)


if __name__ == "__main__":
    main()
