"""The ladder: how 2-GRPO's gap to 16-GRPO moves along one axis (model size, training length, learning-rate rule),
judged by the gap's bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

@dataclass(frozen=True)
class GapPoint:
    """The accuracy gap (2-GRPO minus 16-GRPO, points) at one value of an axis, with its 95% interval."""

    value: float  # the axis value: parameters, epochs, the learning-rate factor
    gap: float
    low: float
    high: float


def axis_verdict(points: list[GapPoint]) -> str:
    """"narrows" or "widens" when the gap's intervals at the axis' two ends do not overlap and the gap is nearer zero
    (narrows) or farther from it (widens) at the larger end; "no trend shown" when they overlap, or with fewer than
    two points. Only the ends are judged: a middle point shows the path, not the verdict."""
    if len(points) < 2:
        return "no trend shown"
    first, last = min(points, key=lambda p: p.value), max(points, key=lambda p: p.value)
    if first.high >= last.low and last.high >= first.low:  # the intervals overlap: within noise
        return "no trend shown"
    return "narrows" if abs(last.gap) < abs(first.gap) else "widens"


REFERENCE_ARM = "g16"


def gap_rows(ladder: dict) -> pd.DataFrame:
    """One row per ladder point and compared arm (from reports/ladder.json, written by tools/ladder.py): the point's
    axis values (parameters, epochs), the arm's learning-rate factor against the reference arm's, the gap to the
    reference (points, with its 95% interval), and per-seed means of the arm's Mean@k, discard rate (groups with
    equal rewards), rollouts and training seconds, and whether the point's SFT base reached its target accuracy.
    Points that have no claims (failed runs) give no row."""
    out = []
    for point, record in ladder["points"].items():
        claims, summary = record.get("claims"), record.get("summary")
        if not claims or not summary:
            continue
        runs = pd.DataFrame(summary)
        numeric = ["lr", "mean_at_k", "dead_group_frac", "rollouts", "train_time"]
        runs[numeric] = runs[numeric].apply(pd.to_numeric, errors="coerce")
        reference = runs[runs["arm"] == claims["reference_arm"]]
        for arm, c in claims["arms"].items():
            own = runs[runs["arm"] == arm]
            out.append({"point": point, "arm": arm, "parameters": record["base"]["parameters"],
                        # the SFT base stopped at its target accuracy (a pretrained base has none: in band)
                        "base_in_band": record["base"].get("reached_target", True) is not False,
                        "epochs": record["params"]["train"]["epochs"],
                        "lr_factor": own["lr"].mean() / reference["lr"].mean(),
                        "gap": 100 * c["accuracy_gap"], "low": 100 * c["accuracy_gap_low"],
                        "high": 100 * c["accuracy_gap_high"], "mean_at_k": 100 * own["mean_at_k"].mean(),
                        "reference_mean_at_k": 100 * reference["mean_at_k"].mean(),
                        "discard_rate": own["dead_group_frac"].mean(),
                        "reference_discard_rate": reference["dead_group_frac"].mean(),
                        "rollouts": own["rollouts"].mean(), "train_seconds": own["train_time"].mean(),
                        "reference_train_seconds": reference["train_time"].mean(), "seeds": len(own)})
    return pd.DataFrame(out)


def axis_verdicts(rows: pd.DataFrame, value: str, by: str = "arm", across_bases: bool = True) -> pd.DataFrame:
    """The verdict along an axis for each group of `rows` (grouped by the column `by`): its rows ordered by the
    column `value` (parameters, epochs, lr_factor) and judged by axis_verdict. With `across_bases` (the axis moves
    from point to point), "not judged" where a point's SFT base stopped below its target accuracy: its RL starts from
    a weaker policy, so the axis would mix two causes (within one point, every arm shares the base). Columns:
    `by`, verdict, the gap with its interval at each value along the axis (text)."""
    out = []
    for key, own in rows.groupby(by, sort=False):
        gaps = [GapPoint(r[value], r["gap"], r["low"], r["high"]) for _, r in own.sort_values(value).iterrows()]
        path = "; ".join(f"{p.value:.3g}: {p.gap:+.1f} [{p.low:+.1f}, {p.high:+.1f}]" for p in gaps)
        short = sorted(set(own.loc[~own["base_in_band"], "point"])) if across_bases else []
        verdict = f"not judged: the base of {', '.join(short)} is below its target" if short else axis_verdict(gaps)
        out.append({by: key, "verdict": verdict, f"gap by {value}": path})
    return pd.DataFrame(out)


PAPER_PARAMETERS = {"Qwen-1.5B": 1.5e9, "DS-1.5B": 1.5e9, "Qwen-7B": 7e9}  # as the models are named
PAPER_EPOCHS = 10  # v3 §5.1


def paper_points(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's gaps (2-GRPO minus 16-GRPO, five-benchmark average Mean@32, points) placed on the ladder's axes:
    v2 Table 1 at its model sizes (parameters) and its 10 epochs; v3 Table 4 by learning-rate factor (2-GRPO over 32
    prompts at 16-GRPO's 1e-6: x1; over 256 prompts at 8e-6: x8; both against 16-GRPO over 32 prompts). One row per
    (table, train set, model): source, train_set, model, parameters, epochs, lr_factor, gap."""
    mean = paper[paper["metric"] == "mean@32"]
    average = mean.groupby(["source", "train_set", "model", "arm"])["value"].mean()
    out = []
    for (train_set, model), runs in average.loc["v2 Table 1"].groupby(level=[0, 1]):
        runs = runs.droplevel([0, 1])
        out.append({"source": "v2 Table 1", "train_set": train_set, "model": model,
                    "parameters": PAPER_PARAMETERS[model], "epochs": PAPER_EPOCHS, "lr_factor": 8.0,
                    "gap": runs["2-GRPO"] - runs["16-GRPO"]})
    for (train_set, model), runs in average.loc["v3 Table 4"].groupby(level=[0, 1]):
        runs = runs.droplevel([0, 1])
        reference = runs["16-GRPO (32 prompts x 16; lr 1e-6)"]
        for arm, factor in (("2-GRPO (32 prompts x 2; lr 1e-6)", 1.0), ("2-GRPO (256 prompts x 2; lr 8e-6)", 8.0)):
            out.append({"source": "v3 Table 4", "train_set": train_set, "model": model,
                        "parameters": PAPER_PARAMETERS[model], "epochs": PAPER_EPOCHS, "lr_factor": factor,
                        "gap": runs[arm] - reference})
    return pd.DataFrame(out)
