"""The graders: one function gives the training reward and the evaluation metric, so they cannot drift.

Three rules, chosen by name (params `grading.reward`, `grading.evaluation`). The paper does not name its verifier:
- `math-verify` (the default): Hugging Face's math-verify parses the answer and the gold answer and compares them
  mathematically (1/2 = 0.5 = \\frac12);
- `verl-math`: verl's default reward for MATH at the paper's time (verl/utils/reward_score/math_reward.py): the last
  \\boxed{} against the gold answer as strings after the normalisation of Hendrycks et al.'s MATH; no box scores 0;
- `verl-dapo`: verl's reward for DAPO-Math data (verl/utils/reward_score/math_dapo.py): the last "Answer:" line in the
  completion's last 300 characters, as strings after Minerva's normalisation. verl scores it +1 / -1; here 1 / 0
  (with the group's standard deviation in the advantage, the same advantages up to train.adv_eps).

Every grader reads the **last** box of a completion that has several (verl's rule; math-verify alone would read
`\\boxed{2} ... \\boxed{3}` as the set {2, 3}). A last box opened and never closed (a truncated response) is no
answer, in every grader. Deviations from verl's code: verl's MATH rule reads a brace-less `\\boxed x` whenever one
appears anywhere in the completion, here only when it is the last box; verl's DAPO rule normalises an Answer: line
with several boxes whole, here its last box alone.

math-verify times out with signal.alarm, so it runs in the main thread of a process. Every step has a time limit
(TIMEOUT_S): an output that would take longer (10^{10^{10}} compared with a number) is graded wrong and flagged as
timed out, never hangs the stage. The fast path: math-verify reads the last box alone, so a box whose text is the
gold's is the call `grade(gold, "\\boxed{gold}")`, which the prepare stage checks to be correct for every problem of
the real datasets (twogrpo.mathdata; the chain sums' answers are integers): it is decided without parsing. Other
answers are cached per (gold, answer text), since a policy repeats its answers.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import NamedTuple

import pandas as pd
from math_verify import parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout

from twogrpo.choices import GRADERS, Grader

TIMEOUT_S = 5  # seconds per parse, per comparison and per conversion of the answer to text (math-verify's default)
DAPO_TAIL = 300  # verl's DAPO reward reads the completion's last 300 characters
UNCLOSED = object()  # a box opened and never closed


class Grade(NamedTuple):
    correct: bool
    # The answer the grader read, as text ("" when none); the gold's text when correct, so that equivalent right
    # answers (0.5, \frac12) vote together in a majority vote.
    extracted: str
    timed_out: bool  # a math-verify step ran out of time (the sample is graded wrong)


def last_box(text: str, fbox: bool = True):
    """The content of the last \\boxed{...} (or, with `fbox`, \\fbox{...}) of text, braces balanced; `\\boxed x` (no
    braces, as in some MATH solutions) runs to the next $. None when text has no box; UNCLOSED when the last is open
    or malformed (a `\\boxed` followed by neither a brace nor a space)."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox") if fbox else -1)
    if start < 0:
        return None
    rest = text[start + (6 if text.startswith("\\boxed", start) else 5):]
    if rest.startswith(" "):
        return rest[1:].split("$", 1)[0].strip()
    if not rest.startswith("{"):
        return UNCLOSED
    depth = 0
    for i, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:i]
    return UNCLOSED


# --- math-verify

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
def _math_verify(gold: str, answer_text: str) -> Grade:
    predicted, timed_out = _parse(answer_text)
    if not predicted:
        return Grade(False, "", timed_out)
    try:
        extracted = _as_text(predicted[-1])
    except TimeoutException:
        extracted, timed_out = "", True
    # A gold answer is a bare LaTeX answer ("\\sqrt{2}", "-4"); math-verify reads bare LaTeX only inside a box
    # or $...$, so it is boxed first.
    start = time.perf_counter()
    correct = bool(verify(list(_parse(f"\\boxed{{{gold}}}")[0]), list(predicted), timeout_seconds=TIMEOUT_S))
    # math-verify reports a comparison that ran out of time as not equal; taking the whole limit is how it shows.
    return Grade(correct, gold if correct else extracted, timed_out or time.perf_counter() - start >= TIMEOUT_S)


def gold_grades_itself(gold: str) -> bool:
    """Whether math-verify parses `gold` and finds it equal to itself: the precondition of the fast path, checked by
    the prepare stage for every problem (a gold that fails it is rejected)."""
    return _math_verify(gold, f"\\boxed{{{gold}}}").correct


def _grade_math_verify(gold: str, completion: str) -> Grade:
    """The last box alone when there is one, else math-verify's default extraction over the whole completion (the
    last expression)."""
    box = last_box(completion)
    if box is UNCLOSED:
        return Grade(False, "", False)
    if box == gold:  # the fast path (module docstring)
        return Grade(True, gold, False)
    return _math_verify(gold, completion if box is None else f"\\boxed{{{box}}}")


# --- verl's MATH rule: the normalisation of Hendrycks et al. (2021), as verl's math_reward.py applies it

class _Unnormalisable(ValueError):
    """verl's normalisation raised: verl then compares the two answers as they are (math_reward.is_equiv)."""


def _fix_fracs(text: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}; a \frac with 1 character after it leaves the text as it
    was, one at the very end raises (as verl's code does)."""
    head, *tails = text.split("\\frac")
    out = head
    for tail in tails:
        out += "\\frac"
        if not tail:
            raise _Unnormalisable(text)
        if tail.startswith("{"):
            out += tail
        elif len(tail) < 2:
            return text
        elif tail[1] == "{":
            out += "{" + tail[0] + "}" + tail[1:]
        else:
            out += "{" + tail[0] + "}{" + tail[1] + "}" + tail[2:]
    return out


def _fix_a_slash_b(text: str) -> str:
    """a/b of two integers written plainly -> \\frac{a}{b}; anything else unchanged (verl's fix_a_slash_b catches its
    int() error since v0.4.0, PR 1312: so `x / y` normalises to `x/y`)."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def _fix_sqrt(text: str) -> str:
    r"""\sqrt3 -> \sqrt{3} (the first character after a brace-less \sqrt); a \sqrt at the very end raises."""
    head, *tails = text.split("\\sqrt")
    if any(not t for t in tails):
        raise _Unnormalisable(text)
    return head + "".join("\\sqrt" + (t if t.startswith("{") else "{" + t[0] + "}" + t[1:]) for t in tails)


def hendrycks_normalise(text: str) -> str:
    """An answer string in MATH's canonical form: no spaces, line breaks, \\left/\\right, degrees, dollars,
    percents or right-hand units (`\\text{ cm}`); \\dfrac and \\tfrac as \\frac; braces added to \\frac12 and
    \\sqrt3; "k = 5" as 5; 0.5 as \\frac{1}{2}; a/b of integers as \\frac{a}{b}. Raises _Unnormalisable where verl's
    code raises."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        text = text.replace(old, new)
    if "\\text{ " in text:  # units on the right
        if text.count("\\text{ ") > 1:
            raise _Unnormalisable(text)
        text = text.split("\\text{ ")[0]
    text = text.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text.startswith("."):
        text = "0" + text
    left, *right = text.split("=")
    if len(right) == 1 and len(left) <= 2:  # "k = 5", "x=3"
        text = right[0]
    text = _fix_fracs(_fix_sqrt(text).replace(" ", ""))
    return "\\frac{1}{2}" if text == "0.5" else _fix_a_slash_b(text)


def _grade_verl_math(gold: str, completion: str) -> Grade:
    """verl reads \\fbox only to fail on it, so an \\fbox answer scores 0; where either normalisation raises, the two
    answers are compared as they are."""
    box = last_box(completion, fbox=False)
    if box is None or box is UNCLOSED:
        return Grade(False, "", False)
    try:
        answer = hendrycks_normalise(box)
        return Grade(answer == hendrycks_normalise(gold), answer, False)
    except _Unnormalisable:
        return Grade(box == gold, box, False)


# --- verl's DAPO rule: Minerva's normalisation (Lewkowycz et al. 2022), as verl's math_dapo.py applies it

_MINERVA_SUBSTITUTIONS = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
                          ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"))
_MINERVA_REMOVED = ("square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots",
                    "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters",
                    "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}",
                    "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ",
                    "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots")


def minerva_normalise(text: str) -> str:
    """A final answer in Minerva's canonical form: the part after the last =, units and filler words removed, the
    inside of $...$, \\text{}, \\textbf{}, \\overline{} and \\boxed{} kept, \\frac12 and \\sqrt3 braced, thousands
    separators dropped from integers."""
    text = text.split("=")[-1]
    for old, new in _MINERVA_SUBSTITUTIONS:
        text = text.replace(old, new)
    for word in _MINERVA_REMOVED:
        text = text.replace(word, "")
    text = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", text)
    for command in ("text", "textbf", "overline"):
        text = re.sub(rf"(\\{command}\{{)(.*?)(\}})", "\\2", text)
    text = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", text)
    text = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", text)
    text = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", text).replace("$", "")
    if text.replace(",", "").isdigit():
        text = text.replace(",", "")
    return text.strip()


def _grade_verl_dapo(gold: str, completion: str) -> Grade:
    """The last "Answer:" line, normalised whole as verl does; a deviation from verl: when that line holds several
    boxes, the last one alone (verl's normalisation would keep the text between the first and the last)."""
    lines = re.findall(r"(?i)Answer\s*:\s*([^\n]+)", completion[-DAPO_TAIL:])
    if not lines:
        return Grade(False, "", False)
    line = lines[-1]
    if line.count("\\boxed") > 1 and isinstance(box := last_box(line), str):
        line = f"\\boxed{{{box}}}"
    answer = minerva_normalise(line)
    return Grade(answer == minerva_normalise(gold), answer, False)


_RULES = {"math-verify": _grade_math_verify, "verl-math": _grade_verl_math, "verl-dapo": _grade_verl_dapo}


def grade(gold: str, completion: str, grader: Grader = "math-verify") -> Grade:
    """Is the completion's final answer equal to gold under `grader`; the answer it read; whether it ran out of
    time. A completion with no readable answer is wrong and its extracted answer is ""."""
    try:
        rule = _RULES[grader]
    except KeyError:
        raise ValueError(f"unknown grader {grader!r} (known: {', '.join(GRADERS)})") from None
    return rule(gold, completion)


def clear_cache() -> None:
    """Forget every grade and parse (for timings and tests that need a cold grader)."""
    _math_verify.cache_clear()
    _parse.cache_clear()


def rewards(golds: list[str], completions: list[str], grader: Grader = "math-verify") -> list[float]:
    """Binary verifiable rewards, 1.0 for a correct answer and 0.0 otherwise (paper §2.1)."""
    return [float(grade(g, c, grader).correct) for g, c in zip(golds, completions, strict=True)]


# Records graded: the evaluation samples (twogrpo.evaluation.sample_records) against their problems' answers.
def correct_column(grader: Grader) -> str:
    """The EvalSamples column of a grader's verdicts: correct_math_verify, correct_verl_math, correct_verl_dapo."""
    return "correct_" + grader.replace("-", "_")


def graded(generations: pd.DataFrame, problems: pd.DataFrame, grader: Grader,
           also: tuple[Grader, ...] = ()) -> pd.DataFrame:
    """The samples graded against their problems' answers (the EvalSamples schema): `correct`, `extracted` and
    `timed_out` by `grader`, and a correct_<name> column for it and each grader of `also`."""
    golds = problems.set_index("id")["answer"].loc[generations["problem_id"]].tolist()
    out = generations.copy()
    for name in dict.fromkeys((grader, *also)):
        grades = [grade(gold, text, name) for gold, text in zip(golds, generations["completion"], strict=True)]
        out[correct_column(name)] = [g.correct for g in grades]
        if name == grader:
            out["correct"] = out[correct_column(name)]
            out["extracted"] = [g.extracted for g in grades]
            out["timed_out"] = [g.timed_out for g in grades]
    return out


def graded_by_all(generations: pd.DataFrame, problems: pd.DataFrame, grader: Grader) -> pd.DataFrame:
    """graded() by `grader`, with every other grader's verdicts beside it (the report's accuracy per grader)."""
    return graded(generations, problems, grader, GRADERS)
