"""base: the base policy. A pretrained model (hub id at base.revision, or a local folder in the hub's format) is
saved as it is; the embedded default trains a tiny Qwen2 from scratch by SFT until it solves part of the problems.

Reads: data/prepared/train.parquet; params `base`, `task`; the hub or base.model's folder.
Writes: models/base/ (save_pretrained model and tokenizer with its chat template), metrics/base.json (where the model
came from: hub commit or local path, and a sha256 of the saved weights, so a changed model shows in `dvc metrics diff`;
the SFT curve for the embedded default, whose last `base.val_size` train problems measure the stopping accuracy).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoConfig

from twogrpo.config import BaseConfig
from twogrpo.io import atomic_path, weights_sha256, write_json
from twogrpo.policy import build_char_tokenizer, build_tiny_model, load_policy
from twogrpo.run import hub_commit, start_stage
from twogrpo.schemas import Problems, read_table
from twogrpo.sft import train_sft

MODEL_DIR = Path("models/base")
METRICS = Path("metrics/base.json")
log = logging.getLogger("base")


def save_pretrained_base(cfg: BaseConfig) -> None:
    """Copy a pretrained model into models/base through from_pretrained/save_pretrained, recording its origin."""
    local = Path(cfg.model).is_dir()
    revision = None if local else cfg.revision
    model, tokenizer = load_policy(cfg.model, revision=revision, max_positions=cfg.max_position_embeddings)
    own = AutoConfig.from_pretrained(cfg.model, revision=revision).max_position_embeddings
    if model.config.max_position_embeddings < own:
        raise ValueError(f"base.max_position_embeddings={cfg.max_position_embeddings} would lower {cfg.model}'s own "
                         f"{own} positions; it only raises them (0 keeps the model's own)")
    if local:
        origin = {"path": str(Path(cfg.model).resolve())}
    else:
        origin = {"hub": cfg.model, "revision": cfg.revision, "commit": hub_commit(cfg.model, cfg.revision, "model")}
    with atomic_path(MODEL_DIR) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        origin["sha256"] = weights_sha256(tmp)
    log.info("base model %s: %d parameters, %s", cfg.model, model.num_parameters(), origin)
    write_json({"model": cfg.model, "parameters": model.num_parameters(),
                "max_position_embeddings": model.config.max_position_embeddings,
                "positions_raised": model.config.max_position_embeddings > own, **origin}, METRICS)


def main() -> None:
    params = start_stage("base")
    cfg = params.base
    if cfg.model != "scratch":
        save_pretrained_base(cfg)
        return
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
        digest = weights_sha256(tmp)
    last = curve.iloc[-1]
    write_json({"model": "scratch", "sha256": digest, "parameters": model.num_parameters(),
                "max_position_embeddings": model.config.max_position_embeddings,
                "positions_raised": bool(cfg.max_position_embeddings),
                "sft_steps": int(last["step"]), "val_accuracy": float(last["val_accuracy"]), "sft_seconds": float(last["seconds"]),
                "reached_target": bool(last["val_accuracy"] >= cfg.target_accuracy),
                "curve": curve.to_dict(orient="records")}, METRICS)


if __name__ == "__main__":
    main()
