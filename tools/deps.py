"""Rewrite what dvc.yaml derives from the code: every stage's code dependencies, the project modules it imports
(twogrpo.lineage), and the train stage's params list, from the role each train setting declares (twogrpo.config.Role)
and the other keys the stage reads (stages.train.OTHER_PARAMS). tests/test_dvc.py fails until they agree.

    python -m tools.deps           # rewrite dvc.yaml in place
    python -m tools.deps --check   # exit 1, naming what differs
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tools import check_or_write
from twogrpo.config import TrainConfig
from twogrpo.lineage import ROOT, imported_files

NOTEBOOKS = {"report": (Path("notebooks/report.ipynb"),)}  # notebooks a stage executes, whose imports count too
STAGE = re.compile(r"^  (\S+):$")
MODULE = re.compile(r"python -m stages\.(\w+)")
CODE_DEP = re.compile(r"^      - \S+\.py$")
PARAM_ENTRY = re.compile(r"^      - \S+$")


def rewritten(text: str) -> tuple[str, list[str]]:
    """dvc.yaml's text with each stage's `.py` deps replaced by its imported files; and the stages that changed."""
    lines, out, changed, stage, module = text.splitlines(), [], [], None, None
    for i, line in enumerate(lines):
        if match := STAGE.match(line):
            stage, module = match.group(1), None
            module = next((m.group(1) for later in lines[i + 1:i + 6] if (m := MODULE.search(later))), None)
        if stage and module and CODE_DEP.match(line):
            if not CODE_DEP.match(out[-1]):  # the first code dep of the stage: write them all here
                wanted = [f"      - {p}" for p in imported_files(f"stages.{module}", NOTEBOOKS.get(stage, ()))]
                old = [x for x in lines[i:] if CODE_DEP.match(x)]
                block = old[: next((k for k, x in enumerate(lines[i:]) if not CODE_DEP.match(x)), len(old))]
                if block != wanted:
                    changed.append(stage)
                out += wanted
            continue
        out.append(line)
    return "\n".join(out) + "\n", changed


def train_params() -> list[str]:
    """The train stage's params keys: the train settings whose declared role makes them a dependency
    (TrainConfig.dependency_keys), this arm's settings, and the keys of other sections the stage reads."""
    from stages.train import OTHER_PARAMS

    return [*TrainConfig.dependency_keys(), "train.arms.${item.arm}", *OTHER_PARAMS]


def with_params(text: str, stage: str, keys: list[str]) -> tuple[str, bool]:
    """dvc.yaml's text with `stage`'s params list replaced by `keys`; and whether that changed it."""
    lines = text.splitlines()
    start = lines.index(f"  {stage}:")
    header = lines.index("    params:", start)
    end = next((i for i in range(header + 1, len(lines)) if not PARAM_ENTRY.match(lines[i])), len(lines))
    wanted = [f"      - {key}" for key in keys]
    return "\n".join(lines[: header + 1] + wanted + lines[end:]) + "\n", lines[header + 1:end] != wanted


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
