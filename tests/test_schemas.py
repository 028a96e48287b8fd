"""Strict schemas accept good tables and reject bad ones with the file, row and field named."""

import pandas as pd
import pytest

from twogrpo.schemas import DataError, EvalSamples, Problems, read_table, validate


def problems(**changes):
    df = pd.DataFrame({"id": ["p0", "p1"], "dataset": ["s", "s"], "problem": ["1+2=", "5-9="], "answer": ["3", "-4"],
                       "solution": [r"\boxed{3}", ""], "level": ["", ""], "subject": ["", ""]})
    for column, (row, value) in changes.items():
        df.loc[row, column] = value
    return df


def test_good_problems_pass():
    assert len(validate(problems(), Problems, "t.parquet")) == 2


@pytest.mark.parametrize(("changes", "where"), [
    ({"id": (1, "p0")}, "field id"),
    ({"problem": (1, "")}, "row 1, field problem"),
    ({"answer": (0, "")}, "row 0, field answer"),
    ({"problem": (0, "find \x0crac12")}, "row 0, field problem"),  # a control character: an unrepaired JSON escape
    ({"dataset": (1, "")}, "row 1, field dataset"),
])
def test_bad_rows_are_named(changes, where):
    with pytest.raises(DataError, match="t.parquet") as err:
        validate(problems(**changes), Problems, "t.parquet")
    assert where in str(err.value)


def test_extra_and_missing_columns_are_rejected():
    with pytest.raises(DataError, match="extra"):
        validate(problems().assign(extra=1), Problems, "t.parquet")
    with pytest.raises(DataError, match="answer"):
        validate(problems().drop(columns="answer"), Problems, "t.parquet")


def test_eval_records_reject_duplicate_samples():
    df = pd.DataFrame({"benchmark": ["b", "b"], "problem_id": ["p0", "p0"], "sample": [0, 0], "completion": ["a", "b"],
                       "extracted": ["", ""], "correct": [True, False], "tokens": [3, 4], "truncated": [False, False],
                       "timed_out": [False, False],
                       **{f"correct_{g}": [True, False] for g in ("math_verify", "verl_math", "verl_dapo")}})
    with pytest.raises(DataError):
        validate(df, EvalSamples, "s.parquet")
    df.loc[1, "sample"] = 1
    assert len(validate(df, EvalSamples, "s.parquet")) == 2


def test_read_table_names_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="missing"):
        read_table(tmp_path / "none.parquet", Problems)
    problems().iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="empty"):
        read_table(tmp_path / "empty.parquet", Problems)
