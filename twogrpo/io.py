"""Atomic writes: an output is either the previous complete one, the new complete one, or absent; a stage with
several outputs writes them all or none (atomic_paths; a kill between its renames, one right after the other, is
the window left)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


PARTIAL = ".partial-"  # marks a write in progress: .dvcignore and .gitignore hide `.*.partial-*`


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (file or folder); rename it into place only if the block succeeds. The
    sibling is hidden from DVC and git (a write killed midway leaves nothing `dvc status` sees), and the leftovers of
    a killed write of the same output are cleared first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}{PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


@contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[tuple[Path, ...]]:
    """Temporary siblings of several outputs, renamed into place one after the other only if the whole block succeeds:
    a stage that fails leaves every previous output as it was."""
    with ExitStack() as stack:
        yield tuple(stack.enter_context(atomic_path(path)) for path in paths)


def weights_sha256(folder: Path | str) -> str:
    """sha256 over a saved model's *.safetensors files, in name order."""
    digest = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.safetensors")):
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def files_sha256(*paths: Path | str) -> str:
    """One sha256 over the bytes of the files, in order (the inputs a checkpoint was trained on)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def write_parquet(df: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(df: pd.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
