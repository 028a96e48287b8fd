"""Timings a reader can trust: a training run beside a CPU-burning process is flagged as timed under contention,
the same run on a quiet machine is not (real processes, the real trainer on a tiny policy)."""

import os

import pytest

from tests.fixtures import bench_script
from tests.test_trainer import run
from twogrpo.config import ArmConfig
from twogrpo.summary import CONTENDED_WAIT_SHARE

# serial: `make test` runs it alone, after the tests it runs two at a time: a neighbour would be the contention it
# measures.
pytestmark = [pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="the wait is measured on Linux"),
              pytest.mark.serial]


def wait_share(problems, **changes) -> float:
    ledger, _ = run(problems, ArmConfig(4, "linear"), epochs=4, **changes)
    last = ledger.iloc[-1]
    assert last["train_cpu_time"] > 0 and last["load_average"] >= 0
    return last["train_cpu_wait"] / last["train_time"]


def test_a_run_beside_a_cpu_burner_is_flagged_and_a_quiet_one_is_not(problems):
    quiet = wait_share(problems)
    with bench_script("contention").cpu_burners(os.cpu_count() or 1):  # as bench/contention.py burns
        busy = wait_share(problems)
    assert quiet < CONTENDED_WAIT_SHARE < busy, (quiet, busy)
