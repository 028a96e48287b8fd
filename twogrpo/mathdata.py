"""The paper's data: MATH and DAPO-Math-Sub for training, five benchmarks (and two extras) for evaluation.

Every dataset goes through `datasets.load_dataset`, from the hub (id, config, split, pinned revision) or from a local
file in the original layout (JSON lines, JSON, parquet, or MATH's one-JSON-file-per-problem folder); then one
normaliser per dataset maps its rows to the Problems schema. Real data has defects; each safe repair is logged and
recorded, everything else is rejected with the dataset, row id and reason.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from twogrpo.config import SourceConfig
from twogrpo.grading import gold_grades_itself
from twogrpo.hub import hub_failure

log = logging.getLogger(__name__)

# verl's DAPO-Math-17k prompt wraps each problem between these two strings; the problem is what lies between.
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the form "
               "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'

# A JSON escape (\f, \t, \b, \r, \v) that swallowed the backslash of a LaTeX command: "\frac" written unescaped in
# JSON reads as form feed + "rac". \f, \b and \v never occur in maths text, so they are always repaired; \t and \r are
# repaired only when the letters after them complete a LaTeX command.
_SWALLOWED = {"\f": "f", "\b": "b", "\v": "v", "\t": "t", "\r": "r"}
_ALWAYS = {"\f", "\b", "\v"}
_T_R_COMMANDS = ("triangle", "times", "text", "tan", "theta", "tau", "tfrac", "to", "top", "tilde", "right", "rho",
                 "rangle", "rceil", "rfloor", "rm")
_CONTROL = re.compile(r"[\f\b\v\t\r]([A-Za-z]*)")
_OTHER_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BOXED_BARE = re.compile(r"\\boxed ([^\s{$]+)")


class BenchmarkDataError(ValueError):
    """Rows that could not be repaired safely; the message lists each by dataset and id."""


@dataclass
class Loaded:
    """A normalised dataset, with the repairs made and the rows rejected (both as readable lines)."""

    name: str
    table: pd.DataFrame
    repairs: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def load_rows(name: str, source: SourceConfig, local_root: str) -> tuple[list[dict], list[str]]:
    """The raw rows of a dataset and a row id for each: from local_root/source.local when local_root is set, else
    from the hub. Ids are the dataset's own id field when it has one, else the file name or row number."""
    if local_root:
        path = Path(local_root) / source.local
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path} does not exist "
                                    f"(prepare.local_root + prepare.sources.{name}.local)")
        if path.is_dir():  # MATH's original layout: <subject>/<n>.json, one pretty-printed problem per file
            files = sorted(path.glob("*/*.json"))
            if not files:
                raise FileNotFoundError(f"{name}: {path} holds no <subject>/<n>.json files")
            ds = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train")
            ids = [f"{f.parent.name}/{f.stem}" for f in files]
        else:
            kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
            if kind is None:
                raise ValueError(f"{name}: {path}: expected .jsonl, .json or .parquet")
            if kind == "json":
                check_text_file(name, path)
            ds = datasets.load_dataset(kind, data_files=str(path), split="train")
            ids = []
    else:
        try:
            ds = datasets.load_dataset(source.hub, source.config or None, split=source.split,
                                       revision=source.revision)
        except (OSError, ValueError) as error:  # offline without a cached copy, a missing repo or revision
            raise ValueError(hub_failure(f"prepare.sources.{name}.hub", source.hub, error)) from error
        ids = []
    rows = ds.to_list()
    if not rows:
        raise ValueError(f"{name}: no rows ({path if local_root else source.hub})")
    if ids and len(ids) != len(rows):
        raise ValueError(f"{name}: {len(rows)} rows from {len(ids)} files; expected one problem per file")
    return rows, ids or [_row_id(row, i) for i, row in enumerate(rows)]


def check_text_file(name: str, path: Path) -> None:
    """A JSON(L) file must be non-empty UTF-8; otherwise say so with the line and column, before any parsing."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{name}: {path} is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{name}: {path}, line {line}, column {column}: not UTF-8 "
                         f"(byte 0x{data[error.start]:02x})") from None


def _row_id(row: dict, index: int) -> str:
    for key in ("unique_id", "id", "idx"):
        if row.get(key) is not None:
            return str(row[key])
    extra = row.get("extra_info")
    if isinstance(extra, dict) and extra.get("index") is not None:
        return str(extra["index"])
    return str(index)


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} in text, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1: j]
    return None


def repair_text(text: str) -> tuple[str, list[str]]:
    """Restore LaTeX backslashes swallowed by JSON escapes; returns the text and a note per repair."""
    notes: list[str] = []

    def fix(match: re.Match) -> str:
        char, word = match.group(0)[0], match.group(1)
        letter = _SWALLOWED[char]
        if char in _ALWAYS or (word and (letter + word).startswith(_T_R_COMMANDS)):
            notes.append(f"{char!r}{word} -> \\{letter}{word}")
            return f"\\{letter}{word}"
        return match.group(0)

    return _CONTROL.sub(fix, text), notes


def _answer_text(value) -> tuple[str, str | None]:
    """A gold answer as text, and a note when it had to be converted (float, int, list)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"no usable gold answer ({value!r})")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"gold answer {value!r}")
        text = str(int(value)) if value.is_integer() else repr(value)
        return text, f"float answer {value!r} -> {text!r}"
    if isinstance(value, (int, np.integer)):
        return str(value), None
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [_strip_dollars(str(v)) for v in value]
        if not parts or not all(parts):
            raise ValueError(f"gold answer list {list(value)!r} is empty or has an empty item")
        return ", ".join(parts), None if len(parts) == 1 else f"{len(parts)} answers joined: {', '.join(parts)!r}"
    return _strip_dollars(str(value)), None


def _strip_dollars(text: str) -> str:
    """"$x$" -> "x" (OlympiadBench writes its answers in math mode, one with a full stop after it)."""
    text = text.strip()
    text = text[:-1] if text.endswith("$.") else text
    return text[1:-1].strip() if len(text) > 1 and text.startswith("$") and text.endswith("$") else text


def _boxed_answer(solution: str) -> tuple[str, str | None]:
    """The last \\boxed{} of a worked solution; `\\boxed 2` (no braces, in two MATH train files) is repaired."""
    answer = last_boxed(solution)
    if answer is not None and solution.rfind("\\boxed{") >= solution.rfind("\\boxed "):
        return answer, None
    bare = _BOXED_BARE.findall(solution)
    if bare:
        return bare[-1].rstrip(".,"), f"\\boxed {bare[-1]} (no braces) -> {bare[-1].rstrip('.,')!r}"
    raise ValueError("no \\boxed{} answer in the solution")


# One normaliser per dataset: raw row -> (problem, gold answer, level, subject, notes). Field names are those of the
# original files (the hub datasets named in params.yaml, and the published files in their layout, as the excerpts
# under tests/data/benchmarks).
def _math(row: dict) -> tuple:
    answer, note = _boxed_answer(row["solution"])
    return row["problem"], answer, str(row.get("level") or ""), str(row.get("type") or ""), [note]


def _math500(row: dict) -> tuple:
    return row["problem"], str(row["answer"]), str(row.get("level") or ""), str(row.get("subject") or ""), []


def _answer_field(row: dict, problem_key: str = "problem") -> tuple:
    answer, note = _answer_text(row["answer"])
    return row[problem_key], answer, "", "", [note]


def _minerva(row: dict) -> tuple:
    answer, note = _boxed_answer(row["solution"])
    return row["problem"], answer, "", str(row.get("type") or ""), [note]


def _olympiad(row: dict) -> tuple:
    answer, note = _answer_text(row["final_answer"])
    problem = row["question"] if not row.get("context") else f"{row['context']}\n\n{row['question']}"
    return problem, answer, "", str(row.get("subfield") or ""), [note]


def _gsm8k(row: dict) -> tuple:
    if "####" not in row["answer"]:
        raise ValueError("no '####' final answer")
    answer = row["answer"].rsplit("####", 1)[1].strip()
    plain = answer.replace(",", "")
    note = f"thousands separators {answer!r} -> {plain!r}" if plain != answer else None
    return row["question"], plain, "", "", [note]


def _dapo(row: dict) -> tuple:
    content = row["prompt"][0]["content"]
    if not (content.startswith(DAPO_PREFIX) and content.endswith(DAPO_SUFFIX)):
        raise ValueError("prompt is not in DAPO-Math-17k's instruction wrapper")
    answer, note = _answer_text(row["reward_model"]["ground_truth"])
    return content[len(DAPO_PREFIX): -len(DAPO_SUFFIX)], answer, "", "", [note]


NORMALISERS = {"math": _math, "dapo_math_sub": _dapo, "math500": _math500, "amc23": _answer_field,
               "aime25": _answer_field, "aime24": _answer_field, "minerva_math": _minerva,
               "olympiadbench": _olympiad, "gsm8k": _gsm8k}


def normalise(name: str, rows: list[dict], ids: list[str]) -> Loaded:
    """Rows of dataset `name` as a Problems table; repairs recorded, unrepairable rows rejected (not in the table)."""
    out = Loaded(name, pd.DataFrame())
    records = []
    for row, row_id in zip(rows, ids, strict=True):
        where = f"{name} id {row_id}"
        try:
            problem, answer, level, subject, notes = NORMALISERS[name](row)
            problem, text_notes = repair_text(problem)
            notes = [n for n in notes if n] + text_notes
            if _OTHER_CONTROL.search(problem):
                raise ValueError(f"control character {_OTHER_CONTROL.search(problem).group(0)!r} in the problem")
            if not problem.strip() or not answer.strip():
                raise ValueError("empty problem or answer")
            if not gold_grades_itself(answer):
                raise ValueError(f"gold answer {answer!r} does not parse or verify against itself with math-verify")
        except (KeyError, TypeError, IndexError) as err:
            out.rejected.append(f"{where}: missing or malformed field {err}")
            continue
        except ValueError as err:
            out.rejected.append(f"{where}: {err}")
            continue
        out.repairs.extend(f"{where}: {n}" for n in notes)
        records.append({"id": f"{name}/{row_id}", "dataset": name, "problem": problem, "answer": answer,
                        "solution": "", "level": level, "subject": subject})
    out.table = pd.DataFrame(records, columns=["id", "dataset", "problem", "answer", "solution", "level", "subject"])
    for line in out.repairs:
        log.info("repaired %s", line)
    for line in out.rejected:
        log.warning("rejected %s", line)
    return out


def problem_key(text: str) -> str:
    """Problem text compared for train/benchmark overlap: case, whitespace and $ signs ignored."""
    return " ".join(text.replace("$", " ").lower().split())


def drop_overlaps(train: pd.DataFrame, benchmarks: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Train problems that also appear in a benchmark are removed; returns the rest and a line per overlap."""
    seen = {problem_key(p): i for p, i in zip(benchmarks["problem"], benchmarks["id"], strict=True)}
    hits = [seen.get(problem_key(p)) for p in train["problem"]]
    lines = [f"train {tid} = benchmark {bid}" for tid, bid in zip(train["id"], hits, strict=True) if bid is not None]
    return train[[h is None for h in hits]].reset_index(drop=True), lines


def dedupe(table: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct problem (DAPO-Math-17k repeats its problems), first occurrence kept."""
    return table[~table["problem"].map(problem_key).duplicated()].reset_index(drop=True)


def sample(table: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """`size` rows drawn without replacement with `seed` (in their original order), or all when there are fewer."""
    if size >= len(table):
        return table
    rows = np.sort(np.random.default_rng(seed).choice(len(table), size=size, replace=False))
    return table.iloc[rows].reset_index(drop=True)
