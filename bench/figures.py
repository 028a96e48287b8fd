"""docs/figures.md, the page of measured figures, written by the bench scripts.

Each script's figures sit in a block of that page between two markers:

    <!-- bench:NAME start -->
    ...
    <!-- bench:NAME end -->

`python bench/<script>.py --record` prints its figures as usual and then replaces its block (NAME: the script's name;
`--record OTHER` writes the block OTHER, e.g. one block per machine). A block the page does not have yet is appended
at its end. Each block opens with a line giving the date (UTC), the commit, the machine and the command.

    from figures import add_record_flag, recording

    add_record_flag(parser, "study_timing")
    args = parser.parse_args()
    with recording(args.record):
        print(...)                     # everything printed inside goes to the page too, on success
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "figures.md"
NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout


def commit() -> str:
    """The short commit of HEAD, with "+ uncommitted changes" when a tracked file differs from it (the page itself
    aside: the figures do not depend on it)."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "commit not recorded (no git)"
    status = _git("status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    dirty = any(path != "docs/figures.md" for path in changed)
    return head.strip() + (" + uncommitted changes" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    try:
        import torch
    except ImportError:
        return "no GPU (torch not installed)"
    if not torch.cuda.is_available():
        return "no GPU"
    count = torch.cuda.device_count()
    return f"{count} x {torch.cuda.get_device_name(0)}"


def machine() -> str:
    return f"{platform.platform()}; {cpu_model()}, {os.cpu_count()} cores; {gpu_name()}"


def command() -> str:
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return shlex.join(["python", script.as_posix(), *sys.argv[1:]])


def header() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"*{now} · commit {commit()} · {machine()} · `{command()}`*"


def record(name: str, markdown: str, page: Path | None = None) -> None:
    """Put `markdown`, under a line with the date, commit, machine and command, into block `name` of the page
    (docs/figures.md unless given): replace the block if the page has it, else append it. The page is replaced
    atomically."""
    page = page or PAGE
    if not NAME.fullmatch(name):
        raise ValueError(f"block name {name!r}: letters, digits, '_', '.' and '-' only")
    start, end = f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"
    block = f"{start}\n{header()}\n\n{markdown.strip()}\n{end}"
    text = page.read_text() if page.exists() else "# Measured figures\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    fd, tmp = tempfile.mkstemp(dir=page.parent, prefix=f".{page.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, page)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def as_markdown(printed: str) -> str:
    """A script's printout as markdown: its tables as they are, its "# ..." lines as paragraphs, its other lines as
    list items, a blank line between unlike neighbours."""
    out: list[str] = []
    previous = None
    for line in printed.splitlines():
        line = line.rstrip()
        if not line:
            continue
        if line.startswith("|"):
            kind, text = "table", line
        elif line.startswith("# "):
            kind, text = "paragraph", line[2:]
        else:
            kind, text = "item", f"- {line}"
        if out and not (kind == previous and kind in ("table", "item")):
            out.append("")
        out.append(text)
        previous = kind
    return "\n".join(out)


class _Tee(io.TextIOBase):
    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def add_record_flag(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--record", nargs="?", const=name, metavar="NAME",
                        help=f"also write the printed figures into docs/figures.md, block NAME (default {name})")


@contextlib.contextmanager
def recording(name: str | None) -> Iterator[None]:
    """Print as usual; with a block name, also record what was printed in docs/figures.md once the body succeeds."""
    if name is None:
        yield
        return
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    record(name, as_markdown(tee.copy.getvalue()))
    print(f"recorded in {PAGE}, block {name}", file=sys.stderr)
