"""What every stage does first: logging, offline mode, thread count, and the validated params."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import torch

from twogrpo.config import Params, load_params


def start_stage(name: str) -> Params:
    """Configure the process for a stage and return the params, logged first (the resolved config)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(int(os.environ.get("TWOGRPO_THREADS", os.cpu_count() or 1)))
    params = load_params()
    logging.getLogger(name).info("params: %s", json.dumps(dataclasses.asdict(params), default=str))
    return params
