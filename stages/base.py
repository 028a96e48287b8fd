"""base: the base policy. A pretrained model (hub id at base.revision, or a local folder in the hub's format) is
saved as it is; the embedded default trains a tiny Qwen2 from scratch by SFT until it solves part of the problems.

Reads: data/prepared/train.parquet and validation.parquet; params `base`, `task`; the hub or base.model's folder.
Writes: models/base/ (save_pretrained model and tokenizer with its chat template), metrics/base.json (where the model
came from: hub commit or local path, and a sha256 of the saved weights, so a changed model shows in `dvc metrics diff`;
the SFT curve for the embedded default, whose first `base.val_size` validation problems measure the stopping
accuracy), both or neither. The SFT keeps checkpoints/base/ at each accuracy measurement (unless
runtime.checkpoint_every is 0): rerun after a kill, it resumes there.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from transformers import AutoConfig

from twogrpo.checkpoint import Checkpoint, Checkpointing
from twogrpo.config import BaseConfig
from twogrpo.hub import hub_commit
from twogrpo.io import atomic_paths, files_sha256, weights_sha256, write_json
from twogrpo.lineage import stage_fingerprint
from twogrpo.plan import stop_unless_this_machine_fits
from twogrpo.policy import build_char_tokenizer, build_tiny_model, check_context, load_policy
from twogrpo.run import start_stage
from twogrpo.schemas import Problems, read_table
from twogrpo.sft import train_sft

MODEL_DIR = Path("models/base")
METRICS = Path("metrics/base.json")
VALIDATION = "data/prepared/validation.parquet"
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
    with atomic_paths(MODEL_DIR, METRICS) as (model_tmp, metrics_tmp):
        model.save_pretrained(model_tmp)
        tokenizer.save_pretrained(model_tmp)
        origin["sha256"] = weights_sha256(model_tmp)
        log.info("base model %s: %d parameters, %s", cfg.model, model.num_parameters(), origin)
        write_json({"model": cfg.model, "parameters": model.num_parameters(),
                    "max_position_embeddings": model.config.max_position_embeddings,
                    "positions_raised": model.config.max_position_embeddings > own, **origin}, metrics_tmp)


def main() -> None:
    params = start_stage("base")
    cfg = params.base
    if cfg.model != "scratch":
        stop_unless_this_machine_fits(params, "base")  # before the weights are downloaded
        save_pretrained_base(cfg)
        return
    train = read_table("data/prepared/train.parquet", Problems)
    val_rows = read_table(VALIDATION, Problems).iloc[: cfg.val_size]
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg, tokenizer)
    template = params.task.prompt_template
    check_context(tokenizer, model.config.max_position_embeddings, train["problem"].tolist(), template,
                  params.task.max_new_tokens, "task.max_new_tokens")  # before the SFT, not after it
    log.info("tiny Qwen2: %d parameters, head_dim %d", model.num_parameters(), cfg.head_dim)
    checkpoint = Checkpoint("base", stage_fingerprint("base", "stages.base", dataclasses.asdict(params),
                                                      files_sha256("data/prepared/train.parquet", VALIDATION)))
    checkpointing = Checkpointing(cfg.eval_every if params.runtime.checkpoint_every else 0,
                                  lambda state: checkpoint.save(state, state["step"]), resume=checkpoint.load())
    curve = train_sft(model, tokenizer, train, val_rows, template, params.task.max_new_tokens, cfg, checkpointing)
    last = curve.iloc[-1]
    with atomic_paths(MODEL_DIR, METRICS) as (model_tmp, metrics_tmp):
        model.save_pretrained(model_tmp)
        tokenizer.save_pretrained(model_tmp)
        write_json({"model": "scratch", "sha256": weights_sha256(model_tmp), "parameters": model.num_parameters(),
                    "max_position_embeddings": model.config.max_position_embeddings,
                    "positions_raised": bool(cfg.max_position_embeddings),
                    "sft_steps": int(last["step"]), "val_accuracy": float(last["val_accuracy"]),
                    "sft_seconds": float(last["seconds"]),
                    # torch's CPU kernels (AVX512, AVX2, ...): the weights are identical run to run on one kind of
                    # CPU, not across kinds, whose float rounding differs
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "reached_target": bool(last["val_accuracy"] >= cfg.target_accuracy),
                    "curve": curve.to_dict(orient="records")}, metrics_tmp)
    checkpoint.clear()  # the outputs are complete: nothing left to resume


if __name__ == "__main__":
    main()
