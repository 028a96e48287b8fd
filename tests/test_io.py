"""Outputs are written atomically: a failure leaves the previous complete output, and one for want of room names the
output and the cause."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twogrpo.io import PARTIAL, atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.json"
    write_json({"v": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": ')  # half-written
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_folder_outputs_are_replaced_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "old.bin").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]


def test_several_outputs_are_written_all_or_none(tmp_path):
    """atomic_paths: a stage that fails after writing some of its outputs (a failing notebook cell after the
    figures, a failing ledger check after the dvclive log) leaves every previous output as it was."""
    from twogrpo.io import atomic_paths

    figures, page = tmp_path / "figures", tmp_path / "report.html"
    with atomic_paths(figures, page) as (figures_tmp, page_tmp):
        figures_tmp.mkdir()
        (figures_tmp / "curves.png").write_text("old figure")
        page_tmp.write_text("old page")
    with pytest.raises(RuntimeError):
        with atomic_paths(figures, page) as (figures_tmp, page_tmp):
            figures_tmp.mkdir()
            (figures_tmp / "curves.png").write_text("new figure")
            raise RuntimeError("a cell failed before the page was written")
    assert (figures / "curves.png").read_text() == "old figure" and page.read_text() == "old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.html"]  # no temporary left behind
    with atomic_paths(figures, page) as (figures_tmp, page_tmp):
        figures_tmp.mkdir()
        (figures_tmp / "curves.png").write_text("new figure")
        page_tmp.write_text("new page")
    assert (figures / "curves.png").read_text() == "new figure" and page.read_text() == "new page"


def test_the_leftovers_of_a_killed_write_are_hidden_from_dvc_and_cleared_by_the_next_write(tmp_path):
    """A stage killed midway leaves its temporary sibling: DVC and git ignore it (`dvc status` of a stage that
    depends on the folder does not change), and the next write of the same output removes it."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.fixtures import ROOT

    target = tmp_path / "runs" / "g2-s0"
    leftover = tmp_path / "runs" / ".g2-s0.partial-abc123" / "g2-s0"
    leftover.mkdir(parents=True)
    (leftover / "steps.parquet").write_text("half")
    for tool in (["git", "check-ignore", "-q"], [str(Path(sys.executable).parent / "dvc"), "check-ignore", "-q"]):
        assert subprocess.run([*tool, "runs/.g2-s0.partial-abc123/g2-s0/steps.parquet"], cwd=ROOT).returncode == 0
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "steps.parquet").write_text("whole")
    assert sorted(p.name for p in target.parent.iterdir()) == ["g2-s0"]


FULL = """
import resource, signal, sys
import numpy as np, pandas as pd, torch
from twogrpo.checkpoint import Checkpoint
from twogrpo.io import atomic_paths, write_parquet
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
big = pd.DataFrame({"x": np.random.default_rng(0).random(100_000)})
which = sys.argv[1]
if which == "parquet":
    write_parquet(big, "out/table.parquet")
elif which == "checkpoint":  # torch.save says only "unexpected pos" when it runs out of room
    Checkpoint("g2-s0", "fingerprint").save({"w": torch.zeros(10**5)}, 3)
else:  # a stage's outputs, one written inside the other's temporary folder
    with atomic_paths("runs/g2-s0", "models/g2-s0") as (run_dir, model_dir):
        write_parquet(big, run_dir / "steps.parquet")
"""


@pytest.mark.parametrize(("which", "named"), [
    ("parquet", "out/table.parquet"),
    ("checkpoint", "checkpoints/g2-s0/state.pt"),
    ("stage", "runs/g2-s0/steps.parquet"),
])
def test_a_write_past_the_file_size_limit_names_the_file_and_the_cause(tmp_path, which, named):
    """A real limit (RLIMIT_FSIZE, as a full disk fails the write): the error names the output, not a temporary, and
    says why; the previous output stays and no temporary is left behind."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out/table.parquet").write_text("previous")
    done = subprocess.run([sys.executable, "-c", FULL, which], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("twogrpo.io.WriteFailed: " + named), done.stderr[-2000:]
    assert "could not be written: no space or file size limit" in last and "file size limit 200,000 bytes" in last
    assert (tmp_path / "out/table.parquet").read_text() == "previous"
    assert not list(tmp_path.rglob(f"*{PARTIAL}*"))
