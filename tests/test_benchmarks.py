"""The real loaders on excerpts of the real benchmark files (tests/data/benchmarks, sources in tests/data/SOURCES.md):
counts, self-verifying gold answers, the repairs the files need and the rows they must reject."""

import json
import shutil

import pytest

from tests.fixtures import BENCHMARKS
from tools.setups import compose
from twogrpo.config import SourceConfig
from twogrpo.grading import gold_grades_itself
from twogrpo.mathdata import last_boxed, load_rows, normalise, repair_text


@pytest.fixture(scope="module")
def sources():
    return compose(["setup=qwen-1.5b-math"])[1].prepare.sources


@pytest.fixture(scope="module")
def loaded(sources):
    cache = {}

    def get(name):
        if name not in cache:
            rows, ids = load_rows(name, sources[name], str(BENCHMARKS))
            cache[name] = normalise(name, rows, ids)
        return cache[name]
    return get


@pytest.mark.parametrize(("name", "count"), [("math500", 100), ("amc23", 10), ("aime25", 30), ("minerva_math", 10),
                                             ("olympiadbench", 13), ("gsm8k", 60), ("aime24", 10)])
def test_benchmarks_load_whole_and_every_gold_answer_verifies_against_itself(loaded, name, count):
    result = loaded(name)
    assert result.rejected == []
    assert len(result.table) == count and result.table["id"].is_unique
    for answer in result.table["answer"]:
        assert gold_grades_itself(answer), answer


def test_math_train_reads_the_original_folder_and_rejects_the_two_empty_boxes(loaded):
    result = loaded("math")
    assert len(result.table) + len(result.rejected) == 49  # the excerpt's files
    assert [line.split(":")[0] for line in result.rejected] == ["math id number_theory/7115",
                                                                "math id number_theory/7117"]
    assert "\\boxed 2 (no braces) -> '2'" in "\n".join(result.repairs)
    assert "\\boxed 9 (no braces) -> '9'" in "\n".join(result.repairs)
    row = result.table.set_index("id").loc["math/algebra/24014"]
    assert row["answer"] == "2" and row["level"] == "Level 3" and row["subject"] == "Algebra"


def test_the_prepare_stage_keeps_every_math_problem_but_the_rejected_and_the_duplicate():
    """MATH train's 7,500 files load to the 7,497 problems the MATH setups train on (train.prompts, verl draws from
    all of them): 2 rejected, 1 duplicate dropped. The excerpt holds all three cases among its 49 files."""
    from stages.prepare import prepare
    _, params = compose(["setup=qwen-1.5b-math", f"prepare.local_root={BENCHMARKS}"])
    tables, record = prepare(params.prepare)
    train = tables["train"]
    assert tables["validation"].equals(tables["test"])  # the setups validate on the benchmarks, as verl did
    assert len(train) == 49 - 2 - 1 and params.train.prompts == 7500 - 2 - 1
    assert record["math"]["duplicates_dropped"] == 1 and len(record["math"]["rejected"]) == 2


def test_a_train_set_of_which_nothing_is_kept_is_named_with_its_source_and_first_rejections(tmp_path):
    """Every MATH train file's solution boxes nothing: the prepare stage stops naming the set, where it was read and
    the first rejections, not with a schema error about missing columns."""
    from stages.prepare import prepare
    from twogrpo.mathdata import BenchmarkDataError

    shutil.copytree(BENCHMARKS, tmp_path / "benchmarks")
    train = tmp_path / "benchmarks" / "math_train" / "train"
    shutil.rmtree(train)
    (train / "algebra").mkdir(parents=True)
    (train / "algebra" / "1.json").write_text(json.dumps({"problem": "What is 1+1?", "solution": "Two.",
                                                          "level": "Level 1", "type": "Algebra"}))
    _, params = compose(["setup=qwen-1.5b-math", f"prepare.local_root={tmp_path / 'benchmarks'}"])
    with pytest.raises(BenchmarkDataError, match=r"math: 0 problems kept of 1 rows read from .*math_train.*; the "
                                                 r"first rejections: math id"):
        prepare(params.prepare)


def test_aime25_control_characters_are_repaired_and_logged(loaded):
    result = loaded("aime25")
    table = result.table.set_index("id")
    for problem_id in ("aime25/18", "aime25/19", "aime25/27"):
        assert not any(c in table.loc[problem_id, "problem"] for c in "\f\t\b")
    assert "\\triangle" in table.loc["aime25/19", "problem"] and "\\frac" in table.loc["aime25/18", "problem"]
    assert sum(line.startswith("aime25 id 18:") for line in result.repairs) == 5
    assert sum(line.startswith("aime25 id 19:") for line in result.repairs) == 1


def test_float_and_list_answers_become_text(loaded):
    amc = loaded("amc23").table.set_index("id")
    assert amc.loc["amc23/0", "answer"] == "27"  # 27.0 in the file
    olympiad = loaded("olympiadbench").table
    multi = olympiad[olympiad["answer"].str.contains(", ")]
    assert len(multi) > 0 and not olympiad["answer"].str.startswith("$").any()


@pytest.mark.parametrize(("text", "expected", "repairs"), [
    ("\x0crac{1}{2}", "\\frac{1}{2}", 1),
    ("\triangle ABC", "\\triangle ABC", 1),
    ("a\tb", "a\tb", 0),  # a tab before a word that is no LaTeX command stays
    ("\x08inom{4}{2}", "\\binom{4}{2}", 1),
    ("no escapes", "no escapes", 0),
])
def test_repair_text(text, expected, repairs):
    repaired, notes = repair_text(text)
    assert repaired == expected and len(notes) == repairs


def test_last_boxed_balances_braces():
    assert last_boxed("so \\boxed{1} or \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("no box") is None


def test_unrepairable_rows_are_rejected_by_dataset_and_id():
    rows = [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "bad \x01 byte", "answer": "3"},
            {"problem": "no answer", "answer": None}, {"question": "wrong field", "answer": "1"}]
    result = normalise("aime25", rows, ["a", "b", "c", "d"])
    assert list(result.table["id"]) == ["aime25/a"]
    assert [line.split(":")[0] for line in result.rejected] == ["aime25 id b", "aime25 id c", "aime25 id d"]
    assert "control character" in result.rejected[0] and "'problem'" in result.rejected[2]


def test_a_missing_local_file_is_named(tmp_path):
    source = SourceConfig(hub="x/y", config="", split="test", revision="main", local="nowhere/test.jsonl")
    with pytest.raises(FileNotFoundError, match="nowhere/test.jsonl"):
        load_rows("amc23", source, str(tmp_path))


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b'{"problem": "What is 1+1?", "answer": "2"}\n{"problem": "caf\xe9", "answer": "3"}\n',
     "line 2, column 17: not UTF-8 (byte 0xe9)"),
])
def test_an_empty_or_non_utf8_file_is_named_with_the_place(tmp_path, content, message):
    (tmp_path / "amc23").mkdir()
    (tmp_path / "amc23" / "test.jsonl").write_bytes(content)
    source = SourceConfig(hub="x/y", config="", split="test", revision="main", local="amc23/test.jsonl")
    with pytest.raises(ValueError, match="amc23/test.jsonl") as err:
        load_rows("amc23", source, str(tmp_path))
    assert message in str(err.value)


def test_a_file_with_the_wrong_columns_rejects_every_row_by_id(tmp_path):
    (tmp_path / "amc23").mkdir()
    (tmp_path / "amc23" / "test.jsonl").write_text('{"question": "What is 1+1?", "solution": "2"}\n')
    source = SourceConfig(hub="x/y", config="", split="test", revision="main", local="amc23/test.jsonl")
    result = normalise("amc23", *load_rows("amc23", source, str(tmp_path)))
    assert result.table.empty and result.rejected == ["amc23 id 0: missing or malformed field 'answer'"]
