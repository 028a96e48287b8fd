"""What every stage does first: logging, offline mode, thread count, and the validated params."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import torch

from twogrpo.config import Params, load_params


def hub_commit(repo_id: str, revision: str, repo_type: str) -> str:
    """The commit a hub revision points at, for the record; "unresolved (...)" when the hub cannot be asked (offline
    mode reading a cached copy)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
    except Exception as err:  # noqa: BLE001 - any failure to ask is recorded, never fatal: the data was read
        return f"unresolved ({type(err).__name__})"


def start_stage(name: str) -> Params:
    """Configure the process for a stage and return the params, logged first (the resolved config).

    The hub is off unless the environment turns it on (HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0, as the paper setups
    need to download), so the embedded default never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(int(os.environ.get("TWOGRPO_THREADS", os.cpu_count() or 1)))
    params = load_params()
    logging.getLogger(name).info("params: %s", json.dumps(dataclasses.asdict(params), default=str))
    return params
