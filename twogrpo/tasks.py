"""The embedded task: chain sums (`75-48+33=`) generated offline with reasoning-gym, with worked solutions for SFT."""

from __future__ import annotations

import re

import pandas as pd
import reasoning_gym

from twogrpo.config import PrepareConfig

_TERM = re.compile(r"[+-]?\d+")


def worked_solution(expression: str) -> str:
    """The SFT target: running partial sums left to right, then the boxed answer.

    `75-48+33` -> `27+33=60\\boxed{60}`; a two-term expression is answered directly: `7+6` -> `\\boxed{13}`.
    """
    terms = [int(t) for t in _TERM.findall(expression)]
    total = terms[0] + terms[1]
    work = ""
    for i in range(2, len(terms)):
        work += str(total) + "".join(f"{t:+d}" for t in terms[i:]) + "="
        total += terms[i]
    return (f"{work}{total}" if work else "") + f"\\boxed{{{total}}}"


def generate_problems(cfg: PrepareConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Distinct train, validation and test problems (no expression in two of them), in generation order: train first,
    then test, then validation (so the train and test sets do not depend on the validation size)."""
    task = cfg.chain_sum
    wanted = cfg.train_size + task.n_test + task.n_validation
    limit = 50 * wanted  # items drawn before giving up: the settings admit too few distinct expressions
    dataset = reasoning_gym.create_dataset(
        "chain_sum", min_terms=task.min_terms, max_terms=task.max_terms, min_digits=task.min_digits,
        max_digits=task.max_digits, allow_negation=False, size=limit, seed=cfg.seed)
    seen: dict[str, dict] = {}
    for index in range(limit):
        item = dataset[index]  # items are drawn lazily and deterministically from (seed, index)
        problem = item["metadata"]["expression"].replace(" ", "") + "="
        if problem not in seen:
            seen[problem] = {"dataset": "chain_sum", "problem": problem, "answer": str(item["answer"]),
                             "solution": worked_solution(problem[:-1]),
                             "level": f"{item['metadata']['num_terms']} terms", "subject": "arithmetic"}
            if len(seen) == wanted:
                break
    else:
        raise ValueError(f"prepare: {limit} draws gave only {len(seen)} distinct problems, fewer than "
                         f"train_size + chain_sum.n_test + n_validation = {wanted}; widen the digits or terms")
    rows = list(seen.values())
    cut = cfg.train_size + task.n_test
    tables = []
    for name, part in (("train", rows[: cfg.train_size]), ("val", rows[cut:]), ("test", rows[cfg.train_size: cut])):
        table = pd.DataFrame(part)
        table.insert(0, "id", [f"{name}-{i:05d}" for i in range(len(table))])
        tables.append(table)
    return tuple(tables)
