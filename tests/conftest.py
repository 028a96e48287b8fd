"""Fixtures shared by the test modules (pytest finds them here); shared constants and helpers: tests/fixtures.py."""

import pytest

from tests.fixtures import chain_sums
from twogrpo.tasks import generate_problems


@pytest.fixture(scope="module")
def problems():
    """16 train and 4 test one-digit chain sums: what the tiny trainer (tests/test_trainer.py:run) trains on."""
    return generate_problems(chain_sums(0, 16, 4, max_terms=2, max_digits=1))


# Under pytest-xdist (make test), the longest groups go to the workers first and the short tests fill in after them;
# in collection order the setups' dry runs came last and ran alone at the end. Within a group the order is kept.
FIRST = ("dry-dapo", "dry-math", "ladder", "pipeline")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        groups = [mark.args[0] for mark in item.iter_markers("xdist_group")]
        return FIRST.index(groups[0]) if groups and groups[0] in FIRST else len(FIRST)

    items.sort(key=rank)
