"""The contrastive panels (results/contrastive/<model>.json, written by the contrastive stages with twogrpo.contrastive)
read for the report: one table per policy, and which definitions give the paper's sign and order (v3 App. B.8, Table 2;
its values: twogrpo.paper.paper_covariance). No torch: the report imports it."""

from __future__ import annotations

import pandas as pd

SHOWN = {"corr": "corr", "cov": "Cov", "cov_per_parameter": "Cov / parameter", "cosine": "cosine",
         "between": "between prompts", "within": "within prompts"}


def _cell(cell: dict, key: str) -> str:
    return f"{cell[key]:.3g} [{cell[f'{key}_low']:.3g}, {cell[f'{key}_high']:.3g}]"


def panel_table(rows: list[dict]) -> pd.DataFrame:
    """One row per estimator: each column's same-prompt value and its permuted baseline, with 95% intervals."""
    table = []
    for row in rows:
        name = row["estimator"]
        if "not_measured" in row:
            table.append({"estimator": name, "mixed prompts": 0, "corr": f"not measured: {row['not_measured']}"})
            continue
        entry = {"estimator": name, "mixed prompts": row["mixed_prompts"]}
        for column, label in SHOWN.items():
            entry[label] = _cell(row[column], "value")
            if column in ("corr", "cov", "cosine"):
                entry[f"{label} permuted"] = _cell(row[column], "permuted")
        table.append(entry)
    return pd.DataFrame(table)


def paper_sign_and_order(row: dict) -> bool:
    """The paper's finding for one estimator: the same-prompt covariance above zero and above the permuted pairs',
    each by its 95% interval."""
    cov = row["cov"]
    return cov["value_low"] > 0 and cov["value_low"] > cov["permuted_high"]


def findings(panels: dict[str, dict]) -> dict[str, list[str]]:
    """For each policy ({policy: its panel}), the estimators that give the paper's sign and order (an empty list:
    none does)."""
    return {policy: [row["estimator"] for row in measured["rows"]
                     if "not_measured" not in row and paper_sign_and_order(row)]
            for policy, measured in panels.items()}


def finding_text(panels: dict[str, dict]) -> str:
    """The claim row's wording: which definitions reproduce the paper's sign and order, on which policies."""
    found = findings(panels)
    score = {p: m["rows"][0] for p, m in panels.items()}  # the score, as the paper writes it
    measured = [p for p, row in score.items() if "not_measured" not in row]
    if not measured:
        return "not measured: no policy had two prompts with both right and wrong responses"
    score = {p: score[p]["cov"]["value"] for p in measured}
    signs = ", ".join(f"{p} {'+' if v > 0 else '-'}" for p, v in score.items())
    reproducing = sorted({name for names in found.values() for name in names})
    if not reproducing:
        return f"not reproduced by any definition; the score as written: {signs}"
    where = "; ".join(f"{name} on {', '.join(p for p in measured if name in found[p])}" for name in reproducing)
    return f"depends on the definition: the paper's sign and order with {where}; the score as written: {signs}"
