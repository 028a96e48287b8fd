"""Smoke run of the whole study with real dvc, real papermill and real math-verify on tiny settings.

The project is copied into a fresh git repository with a tiny params.yaml; `dvc repro` runs every stage.
"""

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from tests.fixtures import check_renders_offline, needs_chromium, new_project, run, tiny_params, tool_env
from twogrpo.schemas import EvalSamples, Problems, Summary, TrainSteps, ValidationSamples, read_table
from twogrpo.telemetry import TIMINGS

# One worker runs the module under pytest-xdist: its fixtures build one tiny study and one experiment.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]

TINY = tiny_params()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study, run whole by `dvc repro`; what it printed is kept beside it (repro.log)."""
    project = new_project(tmp_path_factory.mktemp("study") / "project", TINY)
    done = subprocess.run(["dvc", "repro"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"dvc repro failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (project.parent / "repro.log").write_text(done.stdout + done.stderr)
    return project


def test_a_stage_log_reads_at_a_glance(study):
    """Every line of the study's output fits 300 characters; each stage opens by naming its params file and digest;
    grade and aggregate end with their results (Mean@k and Pass@k per model; each arm's numbers and verdicts)."""
    log = (study.parent / "repro.log").read_text()
    assert [line[:120] for line in log.splitlines() if len(line) > 300] == []
    assert re.search(r"stage train: params \S+params\.yaml \(sha256 [0-9a-f]{12}\), validated", log)
    assert re.search(r"g4-s0: Mean@4 \d+\.\d\d, Pass@4 \d+\.\d\d \(points, 16 problems of chain_sum", log)
    assert re.search(r"g2 vs g4: gap [+-]\d+\.\d\d \[", log) and "g2 verdict on accuracy: " in log
    assert re.search(r"step \d+/\d+: .* ~(\d+ min )?\d+ s left", log)  # GRPO's periodic lines say the time left


def test_every_output_exists_and_validates(study):
    read_table(study / "data/prepared/train.parquet", Problems)
    read_table(study / "data/prepared/test.parquet", Problems)
    for model in ("base", "g4-s0", "g4-s1", "g2-s0", "g2-s1", "g2-rs-s0", "g2-rs-s1"):
        records = read_table(study / f"eval/{model}/samples.parquet", EvalSamples)
        assert len(records) == 16 * 4
        metrics = json.loads((study / f"eval/{model}/metrics.json").read_text())
        assert metrics["k"] == 4 and 0 <= metrics["mean_at_k"] <= metrics["pass_at_k"] <= 1
    for run_name in ("g4-s0", "g2-s1"):
        steps = read_table(study / f"runs/{run_name}/steps.parquet", TrainSteps)
        assert steps["gen_step"].tolist() == [0, 1, 2]
        assert (study / f"runs/{run_name}/live/metrics.json").exists()
    summary = read_table(study / "results/summary.csv", Summary)
    assert set(summary["model"]) == {"base", "g4-s0", "g4-s1", "g2-s0", "g2-s1", "g2-rs-s0", "g2-rs-s1"}
    panels = {path.stem for path in (study / "results/contrastive").glob("*.json")}
    assert panels == {"base", "g4-s0", "g2-s0", "g2-rs-s0"}  # and the first seed's trained models
    score = json.loads((study / "results/contrastive/base.json").read_text())["rows"][0]
    assert score["estimator"] == "score"
    assert score["mixed_prompts"] >= 2 and -1 <= score["corr"]["value"] <= 1
    assert score["corr"]["value_low"] <= score["corr"]["value_high"]


def test_arms_follow_the_budget(study):
    summary = pd.read_csv(study / "results/summary.csv").set_index("model")
    # Same prompts and epochs: G=4 generates twice G=2's rollouts and takes twice its optimizer steps.
    assert summary.loc["g4-s0", "rollouts"] == 16 * 4 and summary.loc["g2-s0", "rollouts"] == 16 * 2
    assert summary.loc["g4-s0", "opt_steps"] == 2 * summary.loc["g2-s0", "opt_steps"] == 8
    assert summary.loc["g2-s0", "lr"] == pytest.approx(2 * summary.loc["g4-s0", "lr"])  # linear rule
    claims = json.loads((study / "metrics/claims.json").read_text())
    assert claims["reference_arm"] == "g4"
    assert claims["arms"]["g2"]["rollout_ratio"] == 0.5
    assert 0.5 <= claims["arms"]["g2-rs"]["rollout_ratio"] <= 1.0 and claims["arms"]["g2-rs"]["resample"]


def test_training_changed_the_weights(study):
    """Weight decay is off in TINY, so a change can only come from the policy gradient of mixed groups."""
    for run_name in ("g4-s0", "g2-s0"):
        steps = read_table(study / f"runs/{run_name}/steps.parquet", TrainSteps)
        assert steps["dead_group_frac"].min() < 1
    base = load_file(study / "models/base/model.safetensors")
    for model in ("g4-s0", "g2-s0"):
        trained = load_file(study / f"models/{model}/model.safetensors")
        assert base.keys() == trained.keys()
        assert any(not (base[k] == trained[k]).all() for k in base)
    assert any(not (load_file(study / "models/g4-s0/model.safetensors")[k]
                    == load_file(study / "models/g4-s1/model.safetensors")[k]).all() for k in base)


def test_report_is_self_contained_html_with_the_claims(study):
    html = (study / "reports/report.html").read_text()
    assert "The claims" in html and "1/8 of the rollouts" in html
    assert html.count("data:image/png;base64") >= 3  # figures embedded, not linked
    assert "Traceback" not in html
    assert "Table 1 layout" in html and "Δ g2 (G=2) - g4 (G=4)" in html
    figures = {f.name for f in (study / "reports/figures").iterdir()}
    assert {"curves.png", "phases.png", "pass_at_k.png"} <= figures


def test_pass_at_j_for_every_j_up_to_k(study):
    passes = pd.read_csv(study / "results/pass_at_k.csv")
    assert sorted(passes["j"].unique()) == [1, 2, 3, 4]
    for _, model in passes.groupby("model"):
        curve = model.sort_values("j")["pass_at_j"].to_numpy()
        assert (np.diff(curve) >= -1e-12).all()  # Pass@j never falls as j grows


@needs_chromium
def test_report_renders_in_a_browser_without_script_errors(study, tmp_path):
    check_renders_offline(study / "reports/report.html", ("The claims", "Provenance"), tmp_path / "report.png")


def test_the_train_stage_reads_validation_and_never_the_test_set(study, tmp_path):
    """Choices read validation: a run trains and writes its validation records with the test problems gone."""
    project = tmp_path / "copy"
    shutil.copytree(study, project, symlinks=True)
    (project / "data/prepared/test.parquet").unlink()
    run([sys.executable, "-m", "stages.train", "--arm", "g2", "--seed", "0"], project)
    records = read_table(project / "runs/g2-s0/validation.parquet", ValidationSamples)
    validation = read_table(project / "data/prepared/validation.parquet", Problems)
    assert set(records["problem_id"]) == set(validation["id"]) and len(records) == 2 * len(validation)
    steps = read_table(project / "runs/g2-s0/steps.parquet", TrainSteps)
    assert steps.equals(read_table(study / "runs/g2-s0/steps.parquet", TrainSteps).assign(
        **{c: steps[c] for c in TIMINGS}))  # the same run, bar timings


def test_repro_after_a_run_does_nothing(study):
    out = run(["dvc", "repro"], study)
    assert "Running stage" not in out


def test_a_collaborator_pulls_the_results_from_a_remote_and_reruns_nothing(study, tmp_path):
    """docs/sharing.md's round trip with a local folder as the DVC remote: push the finished study, clone it, pull;
    the clone's `dvc status` is clean, its report is the same file, and `dvc repro` runs nothing."""
    project, remote, clone = tmp_path / "copy", tmp_path / "remote", tmp_path / "clone"
    shutil.copytree(study, project, symlinks=True)
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the study's results and the team's remote"], project)
    run(["dvc", "push"], project)
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    model = "models/g4-s0/model.safetensors"
    assert not (clone / model).exists()  # a clone holds the code and the small files in git, not the cached outputs
    run(["dvc", "pull"], clone)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone)
    for path in (model, "eval/g2-s1/samples.parquet", "reports/report.html"):
        assert (clone / path).read_bytes() == (study / path).read_bytes(), path
    assert "Running stage" not in run(["dvc", "repro"], clone)


def test_every_file_the_study_writes_is_an_output_dvc_yaml_declares(study):
    """All stages' outputs exist and nothing else is written beside them (no checkpoint is left either)."""
    lock = yaml.safe_load((study / "dvc.lock").read_text())["stages"]
    declared = {out["path"] for stage in lock.values() for out in stage.get("outs", [])}
    # validate, prepare, base, contrastive-base, evaluate-base, grade-base, aggregate, report; train, evaluate and grade
    # for 3 arms x 2 seeds; contrastive for 3 arms
    assert len(lock) == 8 + 3 * 6 + 3
    for path in declared:
        assert (study / path).exists(), path
    written = {p.relative_to(study).as_posix() for folder in ("data/prepared", "models", "runs", "eval", "results",
                                                              "metrics", "reports") for p in (study / folder).rglob("*")
               if p.is_file() and p.name != ".gitignore"}  # DVC writes .gitignore files beside its outputs
    undeclared = {p for p in written if not any(p == d or p.startswith(f"{d}/") for d in declared)}
    assert undeclared == set()
    assert not (study / "checkpoints").exists() or not any((study / "checkpoints").iterdir())


def stages_to_run(project: Path) -> set[str]:
    """The stages `dvc status` finds changed (code, params or inputs) or new: what `dvc repro` would run first."""
    return set(json.loads(run(["dvc", "status", "--json"], project)))


def test_an_edit_reruns_only_what_it_can_change(study, tmp_path):
    """The grain of the pipeline's dependencies, on a copy of the finished study: a runtime setting reruns only the
    params check, a docstring in the summary module reruns only aggregate and report, a new seed trains only
    itself."""
    project = tmp_path / "copy"
    shutil.copytree(study, project, symlinks=True)
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)

    params["runtime"] |= {"checkpoint_every": 5, "gradient_checkpointing": True, "threads": 2}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runtime = stages_to_run(project)
    (project / "params.yaml").write_text(original)

    summary = project / "twogrpo" / "summary.py"
    source = summary.read_text()
    summary.write_text(source.replace('"""The study\'s own tables', '"""The study\'s tables', 1))
    docstring = stages_to_run(project)
    summary.write_text(source)

    params["train"]["seeds"] = [0, 1, 2]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seed = stages_to_run(project)
    print(f"runtime.* changed: reruns {sorted(runtime)}\nsummary.py docstring edited: reruns "
          f"{sorted(docstring)}\na seed added: reruns {sorted(seed)}")
    assert runtime == {"validate"}  # whose output never changes: nothing after it reruns
    assert docstring == {"aggregate", "report"}
    assert seed == {f"{stage}@{arm}-2" for stage in ("train", "evaluate", "grade") for arm in ("g4", "g2", "g2-rs")} \
        | {"validate", "aggregate", "report"}


def test_a_grader_change_regrades_the_stored_samples_and_reruns_nothing_before(study, tmp_path):
    """grading.evaluation is read by the grade stages only: no training and no generation reruns; the samples are
    regraded and the claims follow. On a copy of the finished study."""
    project = tmp_path / "copy"
    shutil.copytree(study, project, symlinks=True)
    params_file = project / "params.yaml"
    changed = yaml.safe_load(params_file.read_text())
    changed["grading"]["evaluation"] = "verl-math"
    generations = {path: path.stat().st_mtime_ns for path in project.glob("eval/*/generations.parquet")}
    params_file.write_text(yaml.safe_dump(changed, sort_keys=False))
    out = run(["dvc", "repro"], project)
    metrics = json.loads((project / "eval/g4-s0/metrics.json").read_text())
    models = [f"{arm}-{seed}" for arm in ("g4", "g2", "g2-rs") for seed in (0, 1)]
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {
        "validate", "grade-base", *(f"grade@{m}" for m in models), "aggregate", "report"}
    assert {path: path.stat().st_mtime_ns for path in generations} == generations  # nothing generated again
    assert metrics["grader"] == "verl-math" and set(metrics["mean_at_k_by_grader"]) == {
        "math-verify", "verl-math", "verl-dapo"}
    assert metrics["mean_at_k_by_grader"]["verl-math"] == metrics["mean_at_k"]


@pytest.fixture(scope="module")
def experiment(study):
    """The study committed, then one DVC experiment on it: one arm's learning-rate rule, the square root (x1.41 at
    G=2 beside G=4) for the linear. It reruns that arm's stages only: the other arms' runs are not trained again."""
    run(["git", "add", "-A"], study)
    run(["git", "commit", "-qm", "results"], study)
    log = run(["dvc", "exp", "run", "-n", "g2-sqrt", "-S", "train.arms.g2.lr_scaling=sqrt"], study)
    assert "Running stage 'train@g2-0'" in log and "Running stage 'train@g4-0'" not in log, log[-3000:]
    return "g2-sqrt"


def test_exp_run_varies_a_train_knob_and_exp_show_lists_it(study, experiment):
    shown = pd.read_csv(io.StringIO(run(["dvc", "exp", "show", "--csv"], study)))
    rule = shown.set_index("Experiment")["train.arms.g2.lr_scaling"]
    # The experiment's row at sqrt; the committed study's (its baseline) at linear. The workspace row shows the last
    # experiment's params, as dvc exp run leaves them.
    assert rule[experiment] == "sqrt" and "linear" in set(shown["train.arms.g2.lr_scaling"])
    # One metrics file, the headline: the README's comparison shows the changed param and every verdict in a
    # terminal's width.
    compact = pd.read_csv(io.StringIO(run(["dvc", "exp", "show", "--only-changed", "--keep", ".*verdict.*", "--csv"],
                                          study)))
    claims = ("accuracy", "accuracy_points", "rollouts", "time")
    verdicts = {f"{arm}.verdict.{claim}" for arm in ("g2", "g2-rs") for claim in claims}
    assert verdicts <= set(compact.columns) and "train.arms.g2.lr_scaling" in compact.columns
    assert len(compact.columns) <= 30, list(compact.columns)


def test_plots_diff_compares_the_curves_and_figures_of_experiments(study, experiment):
    """`dvc plots diff` overlays the committed study and the experiment."""
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", experiment, "--json"], study))["data"]
    curve = plots["eval accuracy against training time"][0]
    values = curve["content"]["data"]["values"]
    assert {v["rev"] for v in values} == {"HEAD", experiment}
    assert {v["arm"] for v in values} == {"g4", "g2", "g2-rs"} and {"eval_accuracy", "train_time"} <= set(values[0])
    images = [key for key in plots if key.startswith("reports/figures/") and key.endswith(".png")]
    assert "reports/figures/curves.png" in images
    assert {image["revisions"][0] for image in plots["reports/figures/curves.png"]} == {"HEAD", experiment}


def test_experiments_report_compares_every_experiment(study, experiment, tmp_path):
    """The second notebook, from real `dvc exp show --json`."""
    run([sys.executable, "-m", "tools.experiments"], study)
    html = (study / "reports/experiments.html").read_text()
    assert experiment in html and "train.arms.g2.lr_scaling" in html and "Traceback" not in html
    verdicts = ("not judged: 2 seeds", "equivalent within the margin", "not shown", "beyond the margin")
    assert sum(html.count(v) for v in verdicts) >= 4
    if shutil.which("chromium"):
        check_renders_offline(study / "reports/experiments.html", ("The claims, per experiment",),
                              tmp_path / "experiments.png")


def test_bad_params_stop_the_run_before_any_stage_and_no_name_reaches_a_shell(study, tmp_path):
    """DVC pastes arm names into the train command, run by a shell: an arm named `g2;touch PWNED;true` would run
    `touch PWNED` (it does without the validate stage). The validate stage runs first and stops the run, naming the key;
    likewise a bad value of a key only a late stage reads (report.equivalence_margin) trains nothing."""
    project = tmp_path / "copy"
    shutil.copytree(study, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["arms"]["g2;touch PWNED;true"] = params["train"]["arms"]["g2"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    injected = subprocess.run(["dvc", "repro"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert injected.returncode != 0 and not (project / "PWNED").exists()
    assert "train.arms.g2;touch PWNED;true: an arm name must be" in injected.stdout + injected.stderr
    assert re.findall(r"Running stage '([^']+)'", injected.stdout) == ["validate"]

    del params["train"]["arms"]["g2;touch PWNED;true"]
    params["report"]["equivalence_margin"] = float("nan")
    params["train"]["seeds"] = [0, 1, 2]  # a new seed would train first, were the margin not checked before
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    late = subprocess.run(["dvc", "repro"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert late.returncode != 0
    assert "report.equivalence_margin=nan: must be a finite number" in late.stdout + late.stderr
    assert re.findall(r"Running stage '([^']+)'", late.stdout) == ["validate"]


def test_a_report_that_fails_midway_keeps_the_previous_report_figures_and_page(study, tmp_path):
    """Run by hand (DVC itself deletes a stage's outputs before running it): a notebook cell failing after the figures
    were drawn leaves the previous figures, notebook and page, byte for byte, and no temporary beside them."""
    project = tmp_path / "copy"
    shutil.copytree(study, project, symlinks=True)
    notebook = json.loads((project / "notebooks/report.ipynb").read_text())
    notebook["cells"] += [{"cell_type": "code", "execution_count": None, "id": cell, "metadata": {}, "outputs": [],
                           "source": [source]} for cell, source in (
        ("draws", "open(f'{figures_dir}/new.png', 'w').write('a figure the previous report did not have')"),
        ("fails", "raise RuntimeError('a cell failed')"))]
    (project / "notebooks/report.ipynb").write_text(json.dumps(notebook))
    before = {p: p.read_bytes() for p in (project / "reports").rglob("*") if p.is_file()}
    failed = subprocess.run([sys.executable, "-m", "stages.report"], cwd=project, env=tool_env(), capture_output=True,
                            text=True)
    assert failed.returncode != 0 and "a cell failed" in failed.stdout + failed.stderr
    assert {p: p.read_bytes() for p in (project / "reports").rglob("*") if p.is_file()} == before  # no new.png
    (injected,) = [cell for cell in json.loads((study / "reports/report.ipynb").read_text())["cells"]
                   if "injected-parameters" in cell["metadata"].get("tags", [])]
    assert "".join(injected["source"]).endswith('figures_dir = "reports/figures"\n')  # not the temporary folder
