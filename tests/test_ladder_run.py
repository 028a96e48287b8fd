"""`python -m tools.ladder` end to end at dry-run sizes: real DVC experiments queued and run, the run cache shared
between points, the report written, and a second call that runs nothing again."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.fixtures import ROOT, check_renders_offline, run, tool_env

# The dry-run scale (one generation step of 32 prompts, 4 test problems, one seed; set again, since the ladder sets
# prompts and seeds itself) with an SFT base of a few steps.
SMALL = ["scale=dry-run", "train.prompts=32", "train.seeds=[0]", "prepare.train_size=100",
         "prepare.chain_sum.n_test=20", "prepare.chain_sum.n_validation=20", "base.max_steps=10", "base.eval_every=5",
         "base.val_size=8", "base.batch_size=8", "runtime.threads=1"]


@pytest.mark.slow
@pytest.mark.xdist_group("ladder")
def test_the_ladder_runs_its_points_as_dvc_experiments_and_reports_them(tmp_path):
    project = tmp_path / "ladder"
    for item in ("dvc.yaml", "params.yaml", "conf", "stages", "twogrpo", "tools", "notebooks", "data/paper",
                 ".dvcignore", ".dvc/plots"):
        src, dst = ROOT / item, project / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (project / ".gitignore").write_text("checkpoints/\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "ladder"],
                ["git", "config", "user.email", "ladder@test.invalid"], ["dvc", "init", "-q", "--force"],
                ["dvc", "config", "core.analytics", "false"], ["dvc", "config", "hydra.enabled", "true"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "ladder"]):
        run(cmd, project)
    ladder = [sys.executable, "-m", "tools.ladder", "--points", "center", "epochs-2-prompts-256",
              *(arg for s in SMALL for arg in ("--set", s))]
    first = subprocess.run(ladder, cwd=project, env=tool_env(), capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project))
    names = {e["name"] for b in shown for g in (b.get("experiments") or []) for e in g["revs"]}
    assert {"ladder-center", "ladder-epochs-2-prompts-256"} <= names  # ordinary experiments, listed by dvc exp show
    recorded = json.loads((project / "reports/ladder.json").read_text())
    assert set(recorded["points"]) == {"center", "epochs-2-prompts-256"}
    for point, epochs in (("center", 1), ("epochs-2-prompts-256", 2)):
        record = recorded["points"][point]
        assert record["params"]["train"]["epochs"] == epochs
        assert set(record["params"]["train"]["arms"]) == {"g16", "g2-tuned", "g2", "g2-updates"}
        assert set(record["claims"]["arms"]) == {"g2-tuned", "g2", "g2-updates"}
    assert set(recorded["seconds"]) == {"center", "epochs-2-prompts-256"}
    html = (project / "reports/ladder.html").read_text()
    assert "Verdicts" in html and "ladder-epochs-2-prompts-256" in html
    if shutil.which("chromium"):  # CI installs it (.ci/run); the page read at 1,400 pixels, nothing spilling over
        check_renders_offline(project / "reports/ladder.html", ("Verdicts",), tmp_path / "ladder.png")
    # The base SFT ran once: the second point restored it from DVC's run cache and trained only its own arms.
    log = run(["dvc", "queue", "logs", "ladder-epochs-2-prompts-256"], project)
    assert "Stage 'base' is cached - skipping run" in log and "Running stage 'train@g16-0'" in log

    again = subprocess.run(ladder, cwd=project, env=tool_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("already run on this commit") == 2 and "queued" not in again.stdout

    # The same points asked with other settings (a smoke run's experiments, then the real ladder) are not reused.
    other = subprocess.run([*ladder, "--set", "report.target_fraction=0.9"], cwd=project, env=tool_env(),
                           capture_output=True, text=True)
    assert other.returncode != 0 and "ladder-center on this commit ran with other params" in other.stderr
