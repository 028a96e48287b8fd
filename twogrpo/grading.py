"""One grader for the training reward and the evaluation metric, so they cannot drift (math-verify, gold first).

math-verify times out with signal.alarm, so grading runs in the main thread of a process.
"""

from __future__ import annotations

from functools import lru_cache

from math_verify import parse, verify


@lru_cache(maxsize=None)
def _parse(text: str) -> tuple:
    return tuple(parse(text))


@lru_cache(maxsize=1_000_000)
def grade(gold: str, completion: str) -> tuple[bool, str]:
    """(is the completion's final answer equal to gold, the answer math-verify read from the completion).

    The answer is read with math-verify's default extraction: a \\boxed{} answer first, else the last expression.
    A completion with no readable answer is wrong and its extracted answer is "".
    Cached per (gold, completion): a policy repeats its answers often, and parsing costs about a millisecond.
    """
    predicted = _parse(completion)
    extracted = str(predicted[-1]) if predicted else ""
    if not predicted:
        return False, extracted
    # A gold answer is a bare LaTeX answer ("\\sqrt{2}", "-4"); math-verify reads bare LaTeX only inside a box
    # or $...$, so it is boxed first.
    return bool(verify(list(_parse(f"\\boxed{{{gold}}}")), list(predicted))), extracted


def rewards(golds: list[str], completions: list[str]) -> list[float]:
    """Binary verifiable rewards, 1.0 for a correct answer and 0.0 otherwise (paper §2.1)."""
    return [float(grade(g, c)[0]) for g, c in zip(golds, completions, strict=True)]
