"""What a stage's result depends on: the project's modules it imports and the params keys dvc.yaml lists for it.

DVC reruns a stage when one of these changes (dvc.yaml's deps and params, checked against `imported_files` by
tests/test_dvc.py); a checkpoint resumes only when none has changed (`stage_fingerprint`), so the two agree on what
shapes a result. Code is followed through `import` and `from ... import` statements anywhere in a module (function
bodies included) and through the code cells of the notebooks a stage executes.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twogrpo", "stages")


def module_file(module: str, root: Path) -> Path | None:
    """The file of a project module (`twogrpo.grpo` -> twogrpo/grpo.py), or None for another package's."""
    if module.split(".")[0] not in PACKAGES:
        return None
    path = root / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from twogrpo import grpo`
    return modules


def notebook_source(path: Path) -> str:
    """The code cells of a notebook, as one module's source (IPython's magics and shell lines left out)."""
    cells = json.loads(path.read_text())["cells"]
    lines = [line for cell in cells if cell["cell_type"] == "code" for line in "".join(cell["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def imported_files(module: str, notebooks: tuple[Path, ...] = (), root: Path | None = None) -> list[Path]:
    """The module's file and every project module it imports, directly or through another, relative to `root`;
    `notebooks` adds the imports of notebooks the stage executes. Package __init__ files without code are left out."""
    root = root or ROOT
    seen: set[Path] = set()
    sources = [notebook_source(root / nb) for nb in notebooks]
    start = module_file(module, root)
    todo = [start] if start else []
    while todo or sources:
        if sources:
            found = _imported_modules(sources.pop())
        else:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            found = _imported_modules(path.read_text())
        todo += [f for f in (module_file(m, root) for m in found) if f and f not in seen]
    return sorted(p.relative_to(root) for p in seen if p.name != "__init__.py" or p.read_text().strip())


def stage_params(stage: str, params: dict, item: dict[str, object] | None = None, root: Path | None = None) -> dict:
    """The values of the params keys dvc.yaml lists for `stage` (a matrix stage's ${item.<name>} filled from
    `item`), read from the params mapping."""
    listed = yaml.safe_load(((root or ROOT) / "dvc.yaml").read_text())["stages"][stage].get("params", [])
    values = {}
    for key in listed:
        for name, value in (item or {}).items():
            key = key.replace(f"${{item.{name}}}", str(value))
        node = params
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


def stage_fingerprint(stage: str, module: str, params: dict, *parts: object, item: dict[str, object] | None = None,
                      ignore: tuple[str, ...] = (), root: Path | None = None) -> str:
    """A sha256 of what shapes the stage's result: the params keys dvc.yaml lists for it (less `ignore`, keys that
    change only memory under these settings), its code (imported_files), and `parts` (the input weights' hash...)."""
    root = root or ROOT
    listed = {key: value for key, value in stage_params(stage, params, item, root).items() if key not in ignore}
    digest = hashlib.sha256(json.dumps([listed, item, parts], sort_keys=True, default=str).encode())
    for path in imported_files(module, root=root):
        digest.update(str(path).encode() + b"\0" + (root / path).read_bytes())
    return digest.hexdigest()
