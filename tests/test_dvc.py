"""dvc.yaml agrees with the code and with params.yaml (real dvc reads the pipeline): each stage runs its module, and
depends on exactly the project modules it imports and on listed params keys that exist, never on `runtime`."""

import re
import typing
from dataclasses import fields
from pathlib import Path

import yaml
from dvc.repo import Repo

from tools.deps import NOTEBOOKS
from tools.setups import compose
from twogrpo.config import Params, load_params
from twogrpo.lineage import imported_files, stage_params

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SECTIONS = typing.get_type_hints(Params)


def stage_module(name: str) -> str:
    """`python -m stages.<module> [--option ${item...}]`: a fixed command, no params value in it."""
    match = re.fullmatch(r"python -m stages\.(\w+)((?: --\w+ [\w$.{}-]+)*)", PIPELINE[name]["cmd"])
    assert match, f"stage {name}: cmd {PIPELINE[name]['cmd']!r} is not `python -m stages.<module> [options]`"
    assert "${" not in match.group(2).replace("${item.", ""), f"stage {name}: a params value in its command"
    return match.group(1)


def test_every_stage_depends_on_exactly_the_project_modules_it_imports():
    for name, stage in PIPELINE.items():
        module = stage_module(name)
        code = {d for d in stage["deps"] if d.endswith(".py")}
        expected = {str(p) for p in imported_files(f"stages.{module}", NOTEBOOKS.get(name, ()))}
        assert code == expected, (f"stage {name}: dvc.yaml lists {sorted(code - expected)} it does not import, and "
                                  f"misses {sorted(expected - code)}")
        assert "twogrpo" not in stage["deps"] and "stages" not in stage["deps"], name


def test_listed_params_keys_exist_for_every_setup_and_arm_and_never_the_runtime():
    """Only `validate` depends on all of params.yaml (runtime included); its output never changes."""
    assert PIPELINE["validate"]["params"] == [{"params.yaml": None}]
    assert "data/validated.json" in PIPELINE["prepare"]["deps"]
    work = {name: stage for name, stage in PIPELINE.items() if name != "validate"}
    for setup in ("embedded", "qwen-1.5b-math", "ablation-qwen-7b-dapo"):
        raw = compose([f"setup={setup}"])[0]
        for name, stage in work.items():
            assert not any(key.split(".")[0] == "runtime" for key in stage.get("params", [])), name
            for arm in raw["train"]["arms"]:
                stage_params(name, raw, {"arm": arm, "seed": 0})  # a key that does not resolve raises KeyError


def test_each_stage_lists_the_params_fields_its_module_reads():
    """params.<section>.<field> read in a stage module (or its notebook) is listed: the section, the field, or keys
    under it. Methods and properties (train.lr(arm)) derive from fields listed with them."""
    for name, stage in PIPELINE.items():
        if name == "validate":
            continue  # all of params.yaml
        listed = set(stage.get("params", []))
        source = (ROOT / "stages" / f"{stage_module(name)}.py").read_text()
        source += "".join((ROOT / nb).read_text() for nb in NOTEBOOKS.get(name, ()))
        for section, key in set(re.findall(r"params\.(\w+)(?:\.(\w+))?", source)):
            if section not in SECTIONS or section == "runtime":
                continue
            if key and key not in {f.name for f in fields(SECTIONS[section])}:
                continue  # a method or property
            prefix = f"{section}.{key}" if key else section  # a whole section handed on: some of its keys listed
            covered = section in listed or any(entry == prefix or entry.startswith(f"{prefix}.") for entry in listed)
            assert covered, f"stage {name} reads params.{section}.{key}, which it does not list"


def test_matrix_expands_to_every_arm_and_seed_of_params():
    params = load_params(ROOT / "params.yaml")
    expected = {f"{arm}-{seed}" for arm in params.train.arms for seed in params.train.seeds}
    with Repo(str(ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    for stage in ("train", "evaluate", "grade"):
        assert {n.split("@", 1)[1] for n in names if n.startswith(f"{stage}@")} == expected


def test_the_committed_lock_holds_only_the_pipelines_stages():
    """DVC keeps a stage's dvc.lock entry after the stage leaves the pipeline (an arm removed, a stage renamed): the
    stale entries double the lock that DVC rewrites after every stage and list hashes of models the study no longer
    has. Remedy, with the study's outputs in the workspace: `rm dvc.lock && dvc commit -f`."""
    with Repo(str(ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked <= names, f"dvc.lock holds stages dvc.yaml no longer has: {sorted(locked - names)}"


def test_the_deps_tool_restores_a_missing_or_extra_code_dep():
    from tools.deps import rewritten

    text = (ROOT / "dvc.yaml").read_text()
    assert rewritten(text) == (text, [])
    tasks = "      - twogrpo/tasks.py\n"
    broken = text.replace("      - twogrpo/run_state.py\n", "", 1).replace(tasks, tasks + "      - twogrpo/x.py\n", 1)
    fixed, changed = rewritten(broken)
    assert fixed == text and changed == ["prepare", "train"]


def test_the_train_stage_lists_every_setting_whose_role_shapes_a_run():
    """A train setting shapes the result unless TrainConfig.ROLES says otherwise; the train stage's params in dvc.yaml
    are generated from the roles (`python -m tools.deps`): a new setting, or one deleted from dvc.yaml, fails here
    until they are regenerated. ROLES names only settings that exist."""
    from tools.deps import train_params, with_params
    from twogrpo.config import Role, TrainConfig

    assert set(TrainConfig.ROLES) <= {field.name for field in fields(TrainConfig)}
    listed = PIPELINE["train"]["params"]
    assert set(TrainConfig.dependency_keys()) <= set(listed)
    assert not set(TrainConfig.keys_with_role(Role.MATRIX)) & set(listed)  # each arm and seed is its own stage
    text = (ROOT / "dvc.yaml").read_text()
    assert with_params(text, "train", train_params()) == (text, False)
    broken = text.replace("      - train.clip_ratio_c\n", "", 1)
    assert broken != text and with_params(broken, "train", train_params()) == (text, True)


def test_make_study_names_what_differs_between_params_yaml_and_conf():
    from tools.compose import differences

    raw = compose([])[0]
    edited = compose(["train.epochs=3", "runtime.threads=2"])[0]
    assert differences(raw, raw) == []
    assert differences(raw, edited) == ["train.epochs: 10 -> 3", "runtime.threads: 0 -> 2"]
