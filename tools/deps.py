"""Rewrite the code dependencies of every dvc.yaml stage as the project modules the stage imports (twogrpo.lineage),
after an import was added or removed; tests/test_dvc.py fails until they agree.

    python -m tools.deps           # rewrite dvc.yaml's `.py` deps in place
    python -m tools.deps --check   # exit 1, naming the stages, when they differ
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tools import check_or_write
from twogrpo.lineage import ROOT, imported_files

NOTEBOOKS = {"report": (Path("notebooks/report.ipynb"),)}  # notebooks a stage executes, whose imports count too
STAGE = re.compile(r"^  (\S+):$")
MODULE = re.compile(r"python -m stages\.(\w+)")
CODE_DEP = re.compile(r"^      - \S+\.py$")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text, changed = rewritten((ROOT / "dvc.yaml").read_text())
    check_or_write(ROOT / "dvc.yaml", [f"the code deps of stage {stage} differ from its imports" for stage in changed],
                   args.check, lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
