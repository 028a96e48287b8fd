"""Fixtures shared by the test modules (pytest finds them here); shared constants and helpers: tests/fixtures.py."""

import os

import pytest
import torch

from tests.fixtures import RESUMABLE, chain_sums, new_project, run
from twogrpo.tasks import generate_problems


@pytest.fixture(scope="module")
def problems():
    """16 train and 4 test one-digit chain sums: what the tiny trainer (tests/test_trainer.py:run) trains on."""
    return generate_problems(chain_sums(0, 16, 4, max_terms=2, max_digits=1))


@pytest.fixture(scope="session")
def resumable_base(tmp_path_factory):
    """A project at RESUMABLE with its data prepared and its SFT base trained (`dvc repro base`), built once per
    worker: the resume, bench and multi-process tests train on copies of it (tests/fixtures.py:copy_project), all in
    one pytest-xdist group (tests/fixtures.py:ON_RESUMABLE_BASE)."""
    project = new_project(tmp_path_factory.mktemp("resumable") / "project", RESUMABLE)
    run(["dvc", "repro", "base"], project)
    return project


# Under pytest-xdist (make test) the scheduler hands out the groups with the most tests first; among groups of the same
# size this order decides (the ladder's one long test before the other single tests). Within a group it is kept.
FIRST = ("dry-dapo", "dry-math", "ladder", "pipeline")
UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which tags each grouped test's node id with its group
def pytest_collection_modifyitems(config, items):
    """The longest groups first. And under `--dist loadgroup`, a worker whose grouped tests carry no group tag would
    scatter each module's costly fixture over both workers, silently building it twice (pytest-xdist#1386: pytest
    9.2's node ids drop the tag, so the dev extra keeps pytest at 9.1): then every test fails, saying why."""
    def rank(item) -> int:
        groups = [mark.args[0] for mark in item.iter_markers("xdist_group")]
        return FIRST.index(groups[0]) if groups and groups[0] in FIRST else len(FIRST)

    items.sort(key=rank)
    untagged = [item.nodeid for item in items if any(item.iter_markers("xdist_group"))
                and "@" not in item.nodeid.rpartition("]")[2]]
    if getattr(config.option, "loadgroup", False) and untagged:
        config.stash[UNGROUPED] = (f"pytest-xdist's --dist loadgroup did not tag {len(untagged)} grouped tests "
                                   f"(e.g. {untagged[0]}): this pytest and pytest-xdist do not work together")


def pytest_configure(config):
    """Under pytest-xdist (make test: one worker per core) each worker and the processes it starts compute on one
    thread: with torch's default of one per core, two workers run four threads on two cores, which wait on each other
    (docs/figures.md, "How long the commands take"). A process given its own thread count (runtime.threads,
    tests/memory_probe.py) keeps it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_runtest_setup(item):
    if UNGROUPED in item.config.stash:
        pytest.fail(item.config.stash[UNGROUPED], pytrace=False)
