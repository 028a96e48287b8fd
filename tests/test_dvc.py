"""dvc.yaml agrees with the code and with params.yaml (real dvc reads the pipeline)."""

import re
from dataclasses import fields
from pathlib import Path

import yaml
from dvc.repo import Repo

from twogrpo.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SECTIONS = {f.name for f in fields(Params)}


def stage_module(stage: dict) -> Path:
    # `python -m stages.<name>`, or `${train.launch} -m stages.<name>` (python or accelerate launch, from params;
    # likewise evaluate.launch)
    match = re.fullmatch(r"(?:python|\$\{(?:train|evaluate)\.launch\}) -m stages\.(\w+)( .*)?", stage["cmd"])
    assert match, f"cmd {stage['cmd']!r} does not run a stage module"
    return ROOT / "stages" / f"{match.group(1)}.py"


def test_every_stage_runs_its_module_and_depends_on_it_and_the_library():
    for name, stage in PIPELINE.items():
        module = stage_module(stage)
        assert module.exists(), name
        assert str(module.relative_to(ROOT)) in stage["deps"], name
        assert "twogrpo" in stage["deps"], name


def test_params_listed_are_sections_or_keys_and_cover_what_each_stage_reads():
    """A stage lists a whole section, or single keys (`grading.reward`) when it reads only those."""
    for name, stage in PIPELINE.items():
        listed = set(stage.get("params", []))
        assert {entry.split(".")[0] for entry in listed} <= SECTIONS, name
        source = stage_module(stage).read_text()
        if name == "report":
            source += (ROOT / "notebooks" / "report.ipynb").read_text()
        for section, key in set(re.findall(r"params\.(\w+)(?:\.(\w+))?", source)):
            if section in SECTIONS:
                assert section in listed or f"{section}.{key}" in listed, \
                    f"stage {name} reads params.{section}.{key}, which it does not declare"


def test_matrix_expands_to_every_arm_and_seed_of_params():
    params = load_params(ROOT / "params.yaml")
    expected = {f"{arm}-{seed}" for arm in params.train.arms for seed in params.train.seeds}
    with Repo(str(ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    for stage in ("train", "evaluate", "grade"):
        assert {n.split("@", 1)[1] for n in names if n.startswith(f"{stage}@")} == expected


def test_stages_write_only_declared_outputs():
    """The paths each stage module names as outputs are the ones dvc.yaml declares."""
    declared = {name: [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]
                for name, stage in PIPELINE.items()}
    assert declared["prepare"] == ["data/prepared"]
    assert set(declared["aggregate"]) == {"results/summary.csv", "results/benchmarks.csv", "results/time_to_target.csv",
                                          "results/pass_at_k.csv", "results/curves.csv",
                                          "metrics/claims.json"}
    source = (ROOT / "stages" / "aggregate.py").read_text()
    for out in declared["aggregate"]:
        assert out in source
