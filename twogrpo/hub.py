"""The Hugging Face hub, as the stages meet it: what to do when a model or dataset cannot be read from it, and the
commit a revision points at (for the record)."""

from __future__ import annotations

import os


def hub_failure(key: str, value: str, error: Exception) -> str:
    """What to do when `value` (params key `key`) could not be read from the hub: offline (the stages' default), the
    variables that allow downloading, or a local copy."""
    dataset = key.startswith("prepare")
    local = ("prepare.local_root (a folder holding the datasets in their original layout)" if dataset
             else "a local folder in the hub's format")
    where = "" if dataset else " is no folder here, and"
    switches = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if dataset else ("HF_HUB_OFFLINE",)
    off = [name for name in switches if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]
    if off:
        return (f"{key}={value!r}{where} is not in the local hub cache, and the hub is off ({off[0]}="
                f"{os.environ[off[0]]}; the stages' default): run with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 to "
                f"download it, or use {local} ({type(error).__name__}: {error})")
    return f"{key}={value!r}{where} could not be read from the hub ({type(error).__name__}: {error}); or use {local}"


def hub_commit(repo_id: str, revision: str, repo_type: str) -> str:
    """The commit a hub revision points at, for the record; "unresolved (...)" when the hub cannot be asked (offline
    mode reading a cached copy)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
    except Exception as err:  # noqa: BLE001 - any failure to ask is recorded, never fatal: the data was read
        return f"unresolved ({type(err).__name__})"
