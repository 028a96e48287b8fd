"""Rewrite what dvc.yaml derives from the code: every stage's code dependencies, the project modules it imports
(twogrpo.lineage), and the train stage's params list, from the role each train setting declares (twogrpo.config.Role)
and the other keys the stage reads (stages.train.OTHER_PARAMS). tests/test_dvc.py fails until they agree. dvc.yaml is
edited through ruamel.yaml's round trip, which keeps its comments and layout.

    python -m tools.deps           # rewrite dvc.yaml in place
    python -m tools.deps --check   # exit 1, naming what differs
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from tools import check_or_write
from twogrpo.config import TrainConfig
from twogrpo.lineage import ROOT, imported_files

NOTEBOOKS = {"report": (Path("notebooks/report.ipynb"),)}  # notebooks a stage executes, whose imports count too
MODULE = re.compile(r"python -m stages\.(\w+)")


def _round_trip() -> YAML:
    """ruamel.yaml set to dvc.yaml's layout (lists indented under their key), so an unchanged file dumps as read."""
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _dump(data) -> str:
    out = io.StringIO()
    _round_trip().dump(data, out)
    return out.getvalue()


def _replace(seq: CommentedSeq, items: list) -> None:
    """Replace a list's items in place, keeping the comment that follows its last item (the next key's, in
    dvc.yaml)."""
    trailing = seq.ca.items.pop(len(seq) - 1, None)
    seq.ca.items.clear()
    seq[:] = items
    if trailing is not None:
        seq.ca.items[len(seq) - 1] = trailing


def _is_code(dep) -> bool:
    return isinstance(dep, str) and dep.endswith(".py")


def rewritten(text: str) -> tuple[str, list[str]]:
    """dvc.yaml's text with each stage's `.py` deps replaced by its imported files (where the first one was, the
    other deps kept in order); and the stages that changed."""
    data, changed = _round_trip().load(text), []
    for name, stage in data["stages"].items():
        module, deps = MODULE.search(stage["cmd"]), stage.get("deps")
        if module is None or deps is None:
            continue
        wanted = [str(p) for p in imported_files(f"stages.{module.group(1)}", NOTEBOOKS.get(name, ()))]
        if [d for d in deps if _is_code(d)] == wanted:
            continue
        changed.append(name)
        first = next((i for i, d in enumerate(deps) if _is_code(d)), 0)
        others = [d for d in deps if not _is_code(d)]
        _replace(deps, others[:first] + wanted + others[first:])
    return (_dump(data) if changed else text), changed


def train_params() -> list[str]:
    """The train stage's params keys: the train settings whose declared role makes them a dependency
    (TrainConfig.dependency_keys), this arm's settings, and the keys of other sections the stage reads."""
    from stages.train import OTHER_PARAMS

    return [*TrainConfig.dependency_keys(), "train.arms.${item.arm}", *OTHER_PARAMS]


def with_params(text: str, stage: str, keys: list[str]) -> tuple[str, bool]:
    """dvc.yaml's text with `stage`'s params list replaced by `keys`; and whether that changed it."""
    data = _round_trip().load(text)
    params = data["stages"][stage]["params"]
    if list(params) == keys:
        return text, False
    _replace(params, keys)
    return _dump(data), True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text, changed = rewritten((ROOT / "dvc.yaml").read_text())
    text, params_changed = with_params(text, "train", train_params())
    differences = [f"the code deps of stage {stage} differ from its imports" for stage in changed]
    differences += ["the train stage's params differ from the train settings' roles"] * params_changed
    check_or_write(ROOT / "dvc.yaml", differences, args.check, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
