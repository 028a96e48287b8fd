"""The study's budget checks and claims, on hand-made summaries."""

import dataclasses

import pandas as pd
import pytest

from twogrpo.config import ArmConfig
from twogrpo.summary import BudgetError, accuracy_verdict, check_budgets, claims
from tests.test_trainer import TRAIN


def summary(rows):
    base = {"model": "base", "arm": "base", "prompts_seen": 0, "rollouts": 0, "mean_at_k": 0.3, "train_time": 0.0}
    return pd.DataFrame([base] + rows)


CFG = dataclasses.replace(TRAIN, arms={"g4": ArmConfig(4, "linear"), "g2": ArmConfig(2, "none"),
                                       "rs": ArmConfig(2, "none", resample=True)})


def test_budgets_pass_when_every_arm_saw_the_declared_prompts():
    check_budgets(CFG, summary([
        {"model": "g4-s0", "arm": "g4", "prompts_seen": 16, "rollouts": 64},
        {"model": "g2-s0", "arm": "g2", "prompts_seen": 16, "rollouts": 32},
        {"model": "rs-s0", "arm": "rs", "prompts_seen": 30, "rollouts": 60},
    ]))


@pytest.mark.parametrize("row", [
    {"model": "g2-s0", "arm": "g2", "prompts_seen": 8, "rollouts": 16},  # fewer prompts
    {"model": "g2-s0", "arm": "g2", "prompts_seen": 16, "rollouts": 34},  # rollouts off
    {"model": "rs-s0", "arm": "rs", "prompts_seen": 40, "rollouts": 80},  # over the reference budget (64)
])
def test_budgets_fail_loudly(row):
    with pytest.raises(BudgetError, match=row["model"]):
        check_budgets(CFG, summary([row]))


def test_claims_compare_each_arm_with_the_reference():
    s = summary([
        {"model": "g4-s0", "arm": "g4", "seed": 0, "rollouts": 64, "mean_at_k": 0.50, "train_time": 10.0},
        {"model": "g4-s1", "arm": "g4", "seed": 1, "rollouts": 64, "mean_at_k": 0.52, "train_time": 10.0},
        {"model": "g2-s0", "arm": "g2", "seed": 0, "rollouts": 32, "mean_at_k": 0.49, "train_time": 4.0},
        {"model": "g2-s1", "arm": "g2", "seed": 1, "rollouts": 32, "mean_at_k": 0.51, "train_time": 6.0},
    ])
    intervals = {"g2": {"average": {"low": -0.03, "high": 0.01}}}
    c = claims(s, "g4", intervals)["g2"]
    assert (c["accuracy_gap_low"], c["accuracy_gap_high"]) == (-0.03, 0.01)
    assert c["accuracy_gap"] == pytest.approx(-0.01)
    assert c["accuracy_gap_per_seed"] == pytest.approx([-0.01, -0.01])
    assert c["rollout_ratio"] == 0.5 and c["time_ratio"] == pytest.approx(0.5)
    assert c["time_ratio_per_seed"] == pytest.approx([0.4, 0.6])


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (-0.009, -0.001, "reproduced"), (-0.06, -0.04, "not reproduced: worse"), (0.04, 0.06, "not reproduced: better"),
    (-0.05, 0.03, "not shown: the interval crosses"), (-0.03, -0.01, "not shown: the interval crosses"),
])
def test_accuracy_verdicts(low, high, verdict):
    assert accuracy_verdict(low, high, margin=0.02).startswith(verdict)
