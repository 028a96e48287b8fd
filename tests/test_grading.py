"""The grading table: (gold, completion) -> correct, through the real math-verify. Grows with every mis-grade found."""

import time

import pytest

from twogrpo import grading
from twogrpo.grading import grade, rewards

CASES = [
    # --- the embedded task's own format
    ("60", r"27+33=60\boxed{60}", True),
    ("8", r"13-5=8\boxed{8}", True),
    ("13", r"\boxed{13}", True),
    ("-4", r"\boxed{-4}", True),
    ("-103", r"-28-75=-103\boxed{-103}", True),
    ("60", r"27+33=60\boxed{61}", False),  # the box wins over the worked line
    ("-4", r"\boxed{4}", False),  # sign matters
    ("4", r"\boxed{-4}", False),
    ("0", r"\boxed{0}", True),
    ("0", r"\boxed{-0}", True),
    # --- boxed LaTeX as the paper's models write it
    ("1/2", r"The answer is \boxed{\frac{1}{2}}.", True),
    ("0.5", r"\boxed{\frac12}", True),
    (r"\frac{3}{4}", r"\boxed{0.75}", True),
    (r"\frac{3}{4}", r"\boxed{\dfrac{3}{4}}", True),
    (r"\frac{3}{4}", r"\boxed{\frac{4}{3}}", False),
    ("2.50", r"\boxed{2.5}", True),
    ("2.5", r"\boxed{2.49}", False),
    (r"10\%", r"\boxed{10\%}", True),
    (r"10\%", r"\boxed{10}", True),  # a bare number matches a percent gold (math-verify's percent handling)
    (r"\sqrt{2}", r"\boxed{\sqrt{2}}", True),
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}", True),
    (r"\pi", r"\boxed{\pi}", True),
    ("x^2+1", r"\boxed{1+x^2}", True),
    ("(1,2)", r"\boxed{(1,2)}", True),
    ("(1,2)", r"\boxed{(2,1)}", False),
    ("-7", r"so $x = -7$, \boxed{-7}", True),
    ("1000", r"\boxed{1,000}", True),
    ("12", r"\boxed{12} apples", True),
    # --- no answer, several boxes, malformed
    ("3", "no answer", False),
    ("3", "", False),
    ("3", r"\boxed{}", False),
    ("3", r"\boxed{2} then \boxed{3}", False),  # two different boxed answers read as a set {2, 3}: not the gold
    ("3", r"\boxed{3} then \boxed{3}", True),
    ("2", r"\boxed 2", True),  # MATH-style box without braces
    ("5", r"\boxed{5", False),  # unclosed box, nothing else to read
    # --- no box: math-verify reads the last expression
    ("60", "27+33=60", True),
    ("3", "27+33=60", False),
]


@pytest.mark.parametrize(("gold", "completion", "correct"), CASES)
def test_grading_table(gold, completion, correct):
    assert grade(gold, completion)[0] is correct


def test_the_table_has_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_extracted_answer_is_recorded_and_empty_when_none():
    assert grade("60", r"27+33=60\boxed{60}")[1] == "60"
    assert grade("3", "no answer")[1] == ""


def test_rewards_are_binary_and_aligned():
    assert rewards(["1", "2"], [r"\boxed{1}", r"\boxed{3}"]) == [1.0, 0.0]
    with pytest.raises(ValueError):
        rewards(["1"], [])


HOSTILE = {
    "100,000 characters": "x" * 100_000 + r" so \boxed{5}",
    "deeply nested LaTeX": r"\boxed{" + r"\frac{1}{" * 300 + "2" + "}" * 300 + "}",
    "huge exponent": r"\boxed{10^{10^{10}}}",
    "many boxes": " ".join(rf"\boxed{{{i}}}" for i in range(2000)),
    "no box": "I think it is five",
}


def test_hostile_outputs_are_graded_in_bounded_time_and_timeouts_are_flagged(monkeypatch):
    """Model outputs that make a grader slow: each is graded (wrong or right) within the time limit, none raises,
    and a step that ran out of time is flagged. The limit is lowered to 1 s to keep the test short."""
    monkeypatch.setattr(grading, "TIMEOUT_S", 1)
    grading.clear_cache()
    results = {}
    for name, text in HOSTILE.items():
        start = time.perf_counter()
        results[name] = grading.grade("5", text)
        assert time.perf_counter() - start < 8, name  # parse + compare, each at most the limit (+ the 5 s print)
    assert results["100,000 characters"] == (True, "5", False)
    assert results["huge exponent"] == (False, "10^{10^{10}}", True)  # sympy cannot compare it in time
    assert results["no box"] == (False, "", False)
    assert not results["many boxes"][0] and not results["deeply nested LaTeX"][0]
    grading.clear_cache()
