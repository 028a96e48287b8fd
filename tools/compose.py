"""Write params.yaml as the composition of conf/ (what `dvc exp run` writes without overrides), and say which keys
changed, so that `make study` runs the study conf/ describes: a plain `dvc repro` reads params.yaml as it is.

    python -m tools.compose          # rewrite params.yaml from conf/, print the keys that changed
    python -m tools.compose --check  # exit 1, naming the keys, when params.yaml differs from conf/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from tools import check_or_write
from tools.setups import compose, compose_to

PARAMS = Path("params.yaml")


def differences(old: object, new: object, where: str = "") -> list[str]:
    """The dotted keys whose values differ between two params mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in dict.fromkeys([*old, *new])
                for line in differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when they differ")
    args = parser.parse_args()
    raw, _ = compose([])  # validated: a bad conf/ stops here, before params.yaml is touched
    current = yaml.safe_load(PARAMS.read_text()) if PARAMS.exists() else {}
    check_or_write(PARAMS, [f"differs from conf/ at {line}" for line in differences(current, raw)], args.check,
                   compose_to)


if __name__ == "__main__":
    main()
