"""One grader for the training reward and the evaluation metric, so they cannot drift (math-verify, gold first).

math-verify times out with signal.alarm, so grading runs in the main thread of a process. Every step has a time
limit (TIMEOUT_S): a model output that would take longer (10^{10^{10}} compared with a number, a deeply nested
fraction) is graded wrong and flagged as timed out, never hangs the stage.
"""

from __future__ import annotations

import time
from functools import lru_cache

from math_verify import parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout

TIMEOUT_S = 5  # seconds per parse, per comparison and per conversion of the answer to text (math-verify's default)


@lru_cache(maxsize=None)
def _parse(text: str) -> tuple[tuple, bool]:
    """(math-verify's parse of text, whether it ran out of time). Other parse errors read as no answer, as
    math-verify's own default does."""
    try:
        return tuple(parse(text, parsing_timeout=TIMEOUT_S, raise_on_error=True)), False
    except TimeoutException:
        return (), True
    except Exception as error:
        if "main thread" in str(error):  # called from a thread: a setup error, not a model output
            raise
        return (), False


@timeout(timeout_seconds=TIMEOUT_S)
def _as_text(answer) -> str:
    return str(answer)  # sympy can take very long to print a huge number


@lru_cache(maxsize=1_000_000)
def grade(gold: str, completion: str) -> tuple[bool, str, bool]:
    """(is the completion's final answer equal to gold, the answer math-verify read from the completion, whether a
    step ran out of time).

    The answer is read with math-verify's default extraction: a \\boxed{} answer first, else the last expression.
    A completion with no readable answer is wrong and its extracted answer is "". A step that runs out of time
    makes the sample wrong and is flagged (counted in the metrics as timeout_frac).
    Cached per (gold, completion): a policy repeats its answers often, and parsing costs about a millisecond.
    """
    predicted, timed_out = _parse(completion)
    if not predicted:
        return False, "", timed_out
    try:
        extracted = _as_text(predicted[-1])
    except TimeoutException:
        extracted, timed_out = "", True
    # A gold answer is a bare LaTeX answer ("\\sqrt{2}", "-4"); math-verify reads bare LaTeX only inside a box
    # or $...$, so it is boxed first.
    start = time.perf_counter()
    correct = bool(verify(list(_parse(f"\\boxed{{{gold}}}")[0]), list(predicted), timeout_seconds=TIMEOUT_S))
    # math-verify reports a comparison that ran out of time as not equal; taking the whole limit is how it shows.
    return correct, extracted, timed_out or time.perf_counter() - start >= TIMEOUT_S


def clear_cache() -> None:
    """Forget every grade and parse (for timings and tests that need a cold grader)."""
    grade.cache_clear()
    _parse.cache_clear()


def rewards(golds: list[str], completions: list[str]) -> list[float]:
    """Binary verifiable rewards, 1.0 for a correct answer and 0.0 otherwise (paper §2.1)."""
    return [float(grade(g, c)[0]) for g, c in zip(golds, completions, strict=True)]
