"""Mean@k and unbiased Pass@k from per-sample records, checked against brute-force enumeration."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from twogrpo.engine import cut_at_stop
from twogrpo.evaluation import first_problems
from twogrpo.metrics import benchmark_metrics, majority_correct, metrics, pass_at_j_curve, pass_at_k


@pytest.mark.parametrize("n", [1, 2, 4, 5, 8])
def test_pass_at_k_equals_the_fraction_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_closed_forms():
    assert pass_at_k(8, 0, 4) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # Pass@1 is the mean accuracy
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def records(correct_by_problem):
    rows = [{"problem_id": f"p{i}", "sample": j, "completion": "", "extracted": "", "correct": bool(c), "tokens": 3,
             "truncated": False, "timed_out": False}
            for i, cs in enumerate(correct_by_problem) for j, c in enumerate(cs)]
    return pd.DataFrame(rows)


def test_metrics_from_records():
    m = metrics(records([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))
    assert m["k"] == 4 and m["problems"] == 3
    assert m["mean_at_k"] == pytest.approx(5 / 12)
    assert m["pass_at_1"] == pytest.approx(m["mean_at_k"])
    assert m["pass_at_k"] == m["pass_at_4"] == pytest.approx(2 / 3)
    assert m["pass_at_2"] == pytest.approx(np.mean([0.5, 1.0, 0.0]))


def test_pass_at_j_curve_is_the_brute_force_subset_average_for_every_j():
    outcomes = [[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
    curve = pass_at_j_curve(records(outcomes).assign(benchmark="b"))
    assert curve["j"].tolist() == [1, 2, 3, 4, 5]
    for j, value in zip(curve["j"], curve["pass_at_j"], strict=True):
        brute = np.mean([np.mean([any(o[i] for i in subset) for subset in itertools.combinations(range(5), j)])
                         for o in outcomes])
        assert value == pytest.approx(brute)


def test_metrics_reject_unequal_sample_counts():
    with pytest.raises(ValueError, match="different numbers of samples"):
        metrics(records([[1, 0], [1]]))


def test_benchmark_metrics_average_benchmarks_equally():
    small = pd.DataFrame({"benchmark": "a", "problem_id": ["p0", "p0"], "correct": [True, True],
                          "extracted": "1", "truncated": False, "timed_out": False, "tokens": 3})
    large = pd.DataFrame({"benchmark": "b", "problem_id": [f"q{i}" for i in range(4) for _ in range(2)],
                          "correct": [False] * 8, "extracted": "", "truncated": False, "timed_out": False, "tokens": 3})
    m = benchmark_metrics(pd.concat([small, large]))
    assert m["benchmarks"]["a"]["mean_at_k"] == 1.0 and m["benchmarks"]["b"]["mean_at_k"] == 0.0
    assert m["mean_at_k"] == 0.5 and m["problems"] == 5 and m["k"] == 2  # not 2/10: each benchmark counts once


def test_first_problems_takes_n_of_each_benchmark_in_table_order():
    table = pd.DataFrame({"dataset": ["x", "x", "x", "y", "y"], "id": list("abcde")})
    assert first_problems(table, 2)["id"].tolist() == ["a", "b", "d", "e"]
    assert first_problems(table, 0)["id"].tolist() == list("abcde")


@pytest.mark.parametrize(("row", "expected"), [
    ([5, 6, 7, 9], ([5, 6, 7], False)),  # the end-of-turn token of the generation config
    ([5, 9, 7], ([5, 9], False)),  # the tokenizer's EOS
    ([5, 6], ([5, 6], True)),  # no stop token: truncated
])
def test_responses_stop_at_the_first_stop_token(row, expected):
    assert cut_at_stop(row, [7, 9]) == expected


@pytest.mark.parametrize(("extracted", "correct", "expected"), [
    (["2", "3", "2"], [True, False, True], True),  # the majority is right
    (["3", "2", "3"], [False, True, False], False),  # the majority is wrong, though one sample is right
    (["", "", "5"], [False, False, True], True),  # no answer does not vote
    (["", ""], [False, False], False),  # nobody answered
    (["4", "7"], [False, True], False),  # a tie goes to the answer seen first
])
def test_majority_vote(extracted, correct, expected):
    assert majority_correct(extracted, correct) is expected


def test_majority_vote_matches_brute_force_over_small_cases():
    for answers in itertools.product("ab", repeat=3):
        correct = [a == "a" for a in answers]
        expected = sum(correct) >= 2
        assert majority_correct(list(answers), correct) is expected


class Interrupted(Exception):
    pass


def test_an_interrupted_evaluation_resumes_without_regenerating_and_gives_the_same_records(tmp_path):
    from tests.fixtures import BASE, chain_sums
    from twogrpo.checkpoint import Checkpoint
    from twogrpo.engine import HFEngine
    from twogrpo.evaluation import sample_records
    from twogrpo.policy import build_char_tokenizer, build_tiny_model
    from twogrpo.sampling import Sampling
    from twogrpo.tasks import generate_problems

    _, _, test = generate_problems(chain_sums(0, 8, 16, max_terms=2, max_digits=1))
    tokenizer = build_char_tokenizer()
    engine = HFEngine(build_tiny_model(BASE, tokenizer), tokenizer, batch_sequences=8)  # 4 problems x 2 per chunk
    sampling = Sampling(0.7, 0.8, 20, 6, n=2)
    whole = sample_records(engine, test, "{problem}", sampling, seed=3)

    class KilledAfterTwoChunks(Checkpoint):
        def save(self, state, step):
            super().save(state, step)
            if step == 2:  # chunks done
                raise Interrupted

    generated = []
    original = engine.generate
    engine.generate = lambda prompts, s: generated.append(len(prompts)) or original(prompts, s)
    with pytest.raises(Interrupted):
        sample_records(engine, test, "{problem}", sampling, seed=3, checkpoint=KilledAfterTwoChunks("e", "f", tmp_path))
    generated.clear()
    resumed = sample_records(engine, test, "{problem}", sampling, seed=3, checkpoint=Checkpoint("e", "f", tmp_path))
    assert generated == [4, 4]  # only the two chunks not done
    pd.testing.assert_frame_equal(whole, resumed)
    other = sample_records(engine, test, "{problem}", sampling, seed=3, checkpoint=Checkpoint("e", "g", tmp_path))
    pd.testing.assert_frame_equal(whole, other)  # other settings: the saved state is ignored, all regenerated

