"""The grading tables: (gold, completion) -> correct, through the real math-verify and verl's two string rules. Grow
with every mis-grade found."""

import json
import time

import pytest
from math_verify import parse, verify

from tests.fixtures import BENCHMARKS
from twogrpo import grading
from twogrpo.grading import (
    GRADERS,
    gold_grades_itself,
    grade,
    hendrycks_normalise,
    last_box,
    minerva_normalise,
    rewards,
)

MATH500 = [json.loads(line) for line in (BENCHMARKS / "math500" / "test.jsonl").open()]

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
    ("3", r"\boxed{2} then \boxed{3}", True),  # the last box (math-verify alone reads the set {2, 3})
    ("2", r"\boxed{2} then \boxed{3}", False),
    ("3", r"\boxed{3} then \boxed{3}", True),
    ("2", r"\boxed 2", True),  # MATH-style box without braces
    ("5", r"\boxed{5", False),  # unclosed box, nothing else to read
    ("2", r"\boxed{2} no wait \boxed{3", False),  # a last box left open is no answer, not the earlier one
    # --- no box: math-verify reads the last expression
    ("60", "27+33=60", True),
    ("3", "27+33=60", False),
]


@pytest.mark.parametrize(("gold", "completion", "correct"), CASES)
def test_grading_table(gold, completion, correct):
    assert grade(gold, completion)[0] is correct


def test_the_table_agrees_with_whole_text_math_verify_but_for_the_last_box_rule():
    """The grader is math-verify on the last box: on every case of the table it gives plain math-verify's verdict
    on the whole completion, except where a completion has several boxes (the last one is read) or a last box left
    open (no answer), the two documented rules."""
    differ = [(gold, completion) for gold, completion, _ in CASES
              if verify(parse(f"\\boxed{{{gold}}}"), parse(completion)) != grade(gold, completion).correct]
    assert differ and all(completion.count("\\boxed") > 1 for _, completion in differ)
    assert {correct for *_, correct in CASES} == {True, False}


def test_extracted_answer_is_recorded_and_empty_when_none():
    assert grade("60", r"27+33=60\boxed{60}")[1] == "60"
    assert grade("3", "no answer")[1] == ""
    assert grade("7", r"\boxed{2/4}").extracted == r"\frac{2}{4}"  # math-verify's reading of a wrong answer


def test_right_answers_vote_as_the_gold():
    """Equivalent right answers are recorded as the gold's text, so a majority vote counts them together."""
    assert grade(r"\frac{1}{2}", r"\boxed{0.5}").extracted == grade(r"\frac{1}{2}", r"\boxed{\frac12}").extracted


VERL_MATH = [
    (r"\frac{1}{2}", r"so \boxed{\dfrac12}", True),
    (r"\frac{1}{2}", r"\boxed{1/2}", True),
    (r"\frac{1}{2}", r"\boxed{0.5}", True),
    (r"\frac{3}{4}", r"\boxed{0.75}", False),  # strings, not values
    ("10", r"\boxed{10\text{ cm}}", True),  # units on the right
    ("3", r"\boxed{x = 3}", True),
    (r"\sqrt{2}", r"\boxed{\sqrt2}", True),
    ("30", r"\boxed{30^\circ}", True),
    (r"(1,2)", r"\boxed{\left( 1, 2 \right)}", True),
    ("3", "the answer is 3", False),  # no box scores 0
    ("3", r"\boxed{3", False),  # unclosed
    ("3", r"\boxed{2} then \boxed{3}", True),
    ("2", r"\boxed{2} then \boxed{3}", False),
    ("2", r"\boxed 2", True),
    ("2", r"so $\boxed 2$ and more", True),  # a brace-less box runs to the next $
    ("7", r"\fbox{7}", False),  # verl reads \fbox only to fail on it
    ("x/y", r"\boxed{x/y}", True),
    # verl's fix_a_slash_b leaves a non-integer a/b as it is (since v0.4.0, PR 1312), after the spaces are gone
    ("x/y", r"\boxed{x / y}", True),
    (r"\pi/2", r"\boxed{\pi / 2}", True),
    ("1.5/2", r"\boxed{1.5 / 2}", True),
    ("1/2", r"\boxed{1 / 2}", True),  # two integers: \frac{1}{2} on both sides
    ("x/y", r"\boxed{y / x}", False),
    ("2", r"\boxed{2} no wait \boxed{3", False),
]

VERL_DAPO = [
    ("42", "Work.\nAnswer: 42", True),
    ("42", r"The answer is \boxed{42}", False),  # no Answer line
    ("1000", "Answer: 1,000", True),
    ("5", "Answer: $5$", True),
    ("5", "Answer: x = 5", True),
    ("5", "answer:5 dollars", True),
    ("5", "Answer: 4\nNo, wait.\nAnswer: 5", True),  # the last line
    ("4", "Answer: 4\nNo, wait.\nAnswer: 5", False),
    ("5", r"Answer: \boxed{4} or rather \boxed{5}", True),  # our deviation: the last of several boxes in the line
    ("5", r"Answer: The final answer is \boxed{5}", False),  # one box: the whole line is normalised, as verl
    ("5", "Answer: 5" + "." * 300, False),  # only the last 300 characters are read
]


@pytest.mark.parametrize(("gold", "completion", "correct"), VERL_MATH)
def test_verl_math_rule(gold, completion, correct):
    assert grade(gold, completion, "verl-math").correct is correct


@pytest.mark.parametrize(("gold", "completion", "correct"), VERL_DAPO)
def test_verl_dapo_rule(gold, completion, correct):
    assert grade(gold, completion, "verl-dapo").correct is correct


@pytest.mark.parametrize("grader", GRADERS)
def test_every_grader_reads_the_last_box(grader):
    prefix = "Answer: " if grader == "verl-dapo" else ""
    assert grade("3", prefix + r"\boxed{2} no: \boxed{3}", grader).correct
    assert not grade("2", prefix + r"\boxed{2} no: \boxed{3}", grader).correct


def test_last_box():
    assert last_box(r"a \boxed{x^{2}} b \boxed{\frac{1}{2}} c") == r"\frac{1}{2}"
    assert last_box(r"\fbox{7}") == "7"
    assert last_box(r"$\boxed 9$.") == "9"
    assert last_box("none") is None
    assert last_box(r"\boxed{1} \boxed{2") is grading.UNCLOSED


def test_normalisations():
    assert hendrycks_normalise(r"\left( \tfrac12, .5 \right)") == r"(\frac{1}{2},0.5)"
    assert hendrycks_normalise("k = 5") == "5"
    assert minerva_normalise(r"$\text{5 dollars}$") == "5"
    assert minerva_normalise("1,234") == "1234"


def test_unknown_grader_is_named():
    with pytest.raises(ValueError, match="unknown grader 'sympy'"):
        grade("1", "1", "sympy")


def whole_text_math_verify(gold: str, completion: str) -> bool:
    """math-verify on the whole completion, no fast path and no cache: the grader before the last-box rule."""
    return bool(verify(parse(f"\\boxed{{{gold}}}"), parse(completion)))


@pytest.mark.parametrize("rows", [[(g, c) for g, c, _ in CASES] + [(r["answer"], r["solution"]) for r in MATH500]],
                         ids=["table+math500"])
def test_fast_path_and_last_box_equal_whole_text_math_verify_where_there_is_one_box(rows):
    """The grader (last box alone, fast path, cache) decides as math-verify on the whole text wherever a completion
    has at most one box; with several, the last box decides (test_every_grader_reads_the_last_box). Stored study
    samples are checked the same way by bench/grading_throughput.py."""
    grading.clear_cache()
    checked = 0
    for gold, completion in rows:
        if completion.count("\\boxed") + completion.count("\\fbox") <= 1 and gold_grades_itself(gold):
            assert grade(gold, completion).correct == whole_text_math_verify(gold, completion), (gold, completion)
            checked += 1
    assert checked >= 120


def test_math500_reference_solutions_are_right_under_each_rule():
    """The reference solutions end in the gold's box: right under math-verify and verl's MATH rule, never under the
    DAPO rule (no Answer: line)."""
    graded = {g: sum(grade(r["answer"], r["solution"], g).correct for r in MATH500) for g in GRADERS}
    assert graded == {"math-verify": 100, "verl-math": 100, "verl-dapo": 0}


def test_rewards_are_binary_and_aligned():
    assert rewards(["1", "2"], [r"\boxed{1}", r"\boxed{3}"]) == [1.0, 0.0]
    assert rewards(["1", "2"], ["Answer: 1", r"\boxed{2}"], "verl-dapo") == [1.0, 0.0]
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
