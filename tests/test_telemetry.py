"""Timings a reader can trust: a training run beside a CPU-burning process is flagged as timed under contention,
the same run on a quiet machine is not (real processes, the real trainer on a tiny policy)."""

import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

from tests.fixtures import chain_sums
from tests.test_trainer import run
from twogrpo.config import ArmConfig
from twogrpo.summary import CONTENDED_WAIT_SHARE
from twogrpo.tasks import generate_problems

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="the wait is measured on Linux")


@pytest.fixture(scope="module")
def problems():
    return generate_problems(chain_sums(0, 16, 4, max_terms=2, max_digits=1))


@contextmanager
def cpu_burners(count: int):
    """`count` processes that keep a core busy each."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def wait_share(problems, **changes) -> float:
    ledger, _ = run(problems, ArmConfig(4, "linear"), epochs=4, **changes)
    last = ledger.iloc[-1]
    assert last["train_cpu_time"] > 0 and last["load_average"] >= 0
    return last["train_cpu_wait"] / last["train_time"]


def test_a_run_beside_a_cpu_burner_is_flagged_and_a_quiet_one_is_not(problems):
    quiet = wait_share(problems)
    with cpu_burners(os.cpu_count() or 1):
        busy = wait_share(problems)
    assert quiet < CONTENDED_WAIT_SHARE < busy, (quiet, busy)
