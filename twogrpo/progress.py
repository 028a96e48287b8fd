"""Progress of the long loops (the base policy's SFT, GRPO's generation steps, a benchmark evaluation): on a terminal a
bar with the time left (tqdm); in a log (CI, `dvc queue logs`, a redirected `dvc repro`) the loops' own periodic lines,
each ending with the time left."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """`total` units of work, `done` of them already (a resumed run); the time left is extrapolated from the units
    done in this process."""

    def __init__(self, total: int, what: str, done: int = 0) -> None:
        self.total, self.done, self.first = total, done, done
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, initial=done, desc=what, leave=False, dynamic_ncols=True) if (
            sys.stderr.isatty()) else None

    def advance(self, units: int = 1) -> None:
        self.done += units
        if self.bar is not None:
            self.bar.update(units)

    def left(self) -> str:
        """The time left, as a log line ends: "~2 min 10 s left" ("" before the first unit)."""
        ran = self.done - self.first
        if ran <= 0:
            return ""
        seconds = round((time.perf_counter() - self.started) / ran * (self.total - self.done))
        return f"~{seconds // 60} min {seconds % 60} s left" if seconds >= 60 else f"~{seconds} s left"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
