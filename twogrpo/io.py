"""Atomic writes: an output is either the previous complete one, the new complete one, or absent; a stage with
several outputs writes them all or none (atomic_paths; a kill between its renames, one right after the other, is
the window left)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

PARTIAL = ".partial-"  # marks a write in progress: .dvcignore and .gitignore hide `.*.partial-*`
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_ROOM_TEXT = ("No space left", "Disk quota exceeded", "File too large")  # as writers that hide the errno word it


class WriteFailed(OSError):
    """An output that could not be written for want of room: the disk full, a quota, or a file size limit."""


def _no_room(error: BaseException, tmps: list[Path]) -> str | None:
    """Why a write into the temporaries `tmps` failed for want of room, or None when it failed otherwise. Writers
    word it differently (torch.save only says "unexpected pos"), so the file system is asked too: its free space, and
    whether a file written reached the process's file size limit."""
    free = min(shutil.disk_usage(tmp.parent).free for tmp in tmps)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    largest = max((f.stat().st_size for tmp in tmps for f in tmp.parent.rglob("*") if f.is_file()), default=0)
    if not (getattr(error, "errno", None) in NO_ROOM or any(text in str(error) for text in NO_ROOM_TEXT)
            or free < 2**20 or (limit != resource.RLIM_INFINITY and largest >= limit)):
        return None
    size_limit = "none" if limit == resource.RLIM_INFINITY else f"{limit:,} bytes"
    return f"{free / 2**20:,.0f} MiB free there, file size limit {size_limit}"


@contextmanager
def _naming_a_failed_write(paths: tuple[Path, ...], tmps: list[Path]) -> Iterator[None]:
    """Reraise a failure for want of room as WriteFailed, naming the outputs being written."""
    try:
        yield
    except WriteFailed as error:  # a write nested in the block: named by its final path, not the temporary one
        message = str(error)
        for path, tmp in zip(paths, tmps, strict=True):
            message = message.replace(str(tmp), str(path))
        raise WriteFailed(message) from error.__cause__
    except Exception as error:
        if (room := _no_room(error, tmps)) is None:
            raise
        raise WriteFailed(f"{', '.join(map(str, paths))}: could not be written: no space or file size limit "
                          f"({room}); {type(error).__name__}: {error}") from error


@contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
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
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (file or folder); rename it into place only if the block succeeds. The
    sibling is hidden from DVC and git (a write killed midway leaves nothing `dvc status` sees), and the leftovers of
    a killed write of the same output are cleared first. A block that fails for want of room raises WriteFailed,
    naming `path`."""
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[tuple[Path, ...]]:
    """Temporary siblings of several outputs, renamed into place one after the other only if the whole block succeeds:
    a stage that fails leaves every previous output as it was (atomic_path)."""
    paths = tuple(Path(path) for path in paths)
    with ExitStack() as stack:
        tmps = [stack.enter_context(_temporary_sibling(path)) for path in paths]
        with _naming_a_failed_write(paths, tmps):
            yield tuple(tmps)


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
