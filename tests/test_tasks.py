"""The embedded task: worked solutions are right, tables are deterministic and disjoint."""

import dataclasses

import pytest

from tests.fixtures import chain_sums
from twogrpo.grading import grade
from twogrpo.tasks import generate_problems, worked_solution


@pytest.mark.parametrize(("expression", "solution"), [
    ("75-48+33", r"27+33=60\boxed{60}"),
    ("7+6-5", r"13-5=8\boxed{8}"),
    ("7+6", r"\boxed{13}"),
    ("5-9", r"\boxed{-4}"),
    ("1+2+3+4", r"3+3+4=6+4=10\boxed{10}"),
])
def test_worked_solution(expression, solution):
    assert worked_solution(expression) == solution


def test_tables_are_deterministic_disjoint_and_self_consistent():
    cfg = chain_sums(3, 300, 50, max_terms=3, max_digits=2)
    train, validation, test = generate_problems(cfg)
    again, _, test_again = generate_problems(cfg)
    assert train.equals(again) and test.equals(test_again)
    assert len(train) == 300 and len(validation) == 20 and len(test) == 50
    assert not set(train["problem"]) & set(test["problem"])
    assert not set(validation["problem"]) & (set(train["problem"]) | set(test["problem"]))
    # the train and test sets do not depend on the validation size
    bigger = dataclasses.replace(cfg, chain_sum=dataclasses.replace(cfg.chain_sum, n_validation=40))
    train_b, _, test_b = generate_problems(bigger)
    assert train_b.equals(train) and test_b.equals(test)
    assert set(train["level"]) == {"2 terms", "3 terms"}
    for row in train.itertuples():
        assert eval(row.problem[:-1]) == int(row.answer)  # noqa: S307 - digits and +/- only
        assert grade(row.answer, row.solution)[0]


def test_too_few_distinct_problems_is_a_clear_error():
    cfg = chain_sums(0, 200, 10, max_terms=2, max_digits=1)
    with pytest.raises(ValueError, match="distinct problems"):
        generate_problems(cfg)
