"""Fixtures shared by the test modules (pytest finds them here); shared constants and helpers: tests/fixtures.py."""

import pytest

from tests.fixtures import chain_sums
from twogrpo.tasks import generate_problems


@pytest.fixture(scope="module")
def problems():
    """16 train and 4 test one-digit chain sums: what the tiny trainer (tests/test_trainer.py:run) trains on."""
    return generate_problems(chain_sums(0, 16, 4, max_terms=2, max_digits=1))
