"""Command-line tools over the whole repository (not used by the stages)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from twogrpo.io import atomic_path


def check_or_write(path: Path, differences: list[str], check: bool, write: Callable[[Path], None]) -> None:
    """Print each difference between `path` and what it should be; with `check` exit 1 when there is one, otherwise
    rewrite the file (atomically, by `write` on a temporary path) when there is one."""
    for line in differences:
        print(f"{path}: {line}")
    if check:
        sys.exit(1 if differences else 0)
    if differences:
        with atomic_path(path) as tmp:
            write(tmp)
