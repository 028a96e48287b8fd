"""The ladder: how 2-GRPO's gap to 16-GRPO moves along one axis (model size, training length, learning-rate rule),
judged by a weighted line through every point's gap (twogrpo.stats.trend), and how the ladder's choices are made."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from twogrpo.paper import MIN_SEEDS
from twogrpo.stats import Interval, seed_interval, trend


@dataclass(frozen=True)
class GapPoint:
    """The accuracy gap (2-GRPO minus 16-GRPO, points) at one value of an axis: its 95% interval, standard error and
    degrees of freedom (twogrpo.stats.gap), and the fewer of the two arms' seeds."""

    value: float  # the axis value: parameters, epochs, the learning-rate factor
    gap: float
    low: float
    high: float
    se: float = np.nan
    df: float = np.nan
    seeds: int = 0
    name: str = ""


def gap_text(gap: float, low: float, high: float) -> str:
    """A gap in points with its interval, or marked as having none."""
    return f"{gap:+.1f} " + (f"[{low:+.1f}, {high:+.1f}]" if np.isfinite(low) else "(no interval)")


# The axes are read on these scales: model size and the learning-rate factor act multiplicatively.
AXIS_SCALES = {"parameters": np.log10, "lr_factor": np.log2, "epochs": lambda x: x, "prompts": np.log2}


def axis_verdict(points: list[GapPoint], scale=lambda x: x) -> str:
    """The trend of the signed gap along the axis, from a weighted line through every point with MIN_SEEDS seeds
    (twogrpo.stats.trend on scale(value)). Points with fewer seeds are shown, never fitted: they cannot decide.

    "no trend shown" when the slope's 95% interval holds 0; "reverses" when the fitted gaps at the two ends lie on
    opposite sides of 0, each interval excluding it (the order of the arms changes along the axis); else "narrows"
    (the fitted gap is nearer 0 at the larger end) or "widens". "not judged" with fewer than two fitted points."""
    def has_interval(p: GapPoint) -> bool:
        return bool(np.isfinite(p.gap) and np.isfinite(p.se) and not np.isnan(p.df))

    fitted = [p for p in points if p.seeds >= MIN_SEEDS and has_interval(p)]
    if len({p.value for p in fitted}) < 2:
        few = ", ".join(f"{p.name or p.value}: {p.seeds}" for p in points if p.seeds < MIN_SEEDS)
        bare = ", ".join(f"{p.name or p.value}" for p in points if p.seeds >= MIN_SEEDS and not has_interval(p))
        return (f"not judged: fewer than two points with {MIN_SEEDS}+ seeds and an interval"
                + (f" (seeds {few})" if few else "") + (f" (no interval: {bare})" if bare else ""))
    fit = trend(np.array([scale(p.value) for p in fitted]),
                [Interval(p.gap, p.low, p.high, p.se, p.df, 0.95) for p in fitted])
    if fit.slope.low <= 0 <= fit.slope.high:
        return "no trend shown"
    start, end = fit.start, fit.end
    if (start.high < 0 < end.low) or (end.high < 0 < start.low):
        return "reverses"
    return "narrows" if abs(end.value) < abs(start.value) else "widens"


REFERENCE_ARM = "g16"

# The rule that chooses the learning rates and the embedded default (docs/ladder.md), written before the runs it reads.
GRID_PREFIX = "grid-lr-"  # the grid's points: 16-GRPO at each reference rate, 2-GRPO at x1 and x8 of each
NEAR = 1.0  # points of validation Mean@k: an arm's rates this close to its best count as best; the lowest is taken
# The points the default is chosen among: those whose study (two arms, 3 seeds) fits 12 minutes on 2 cores.
CANDIDATES = ["center", "epochs-10-prompts-128"]
DEFAULT_RULE = ("among the candidates, the point where 16-GRPO is still improving (the slope of its in-training "
                "validation accuracy over the second half of its generation steps, every seed pooled, has a one-sided "
                "95% lower bound above 0) and gained over its base (its last in-training validation accuracy above "
                "its accuracy before training, by a one-sided 95% bound over seeds), with the most epochs, then the "
                "most prompts; if none is still improving, the one where 16-GRPO's final validation Mean@k is "
                "highest, 16-GRPO saturated there. It reads validation only, and 16-GRPO only.")


def rate_choice(rows: pd.DataFrame, grid: list[str]) -> tuple[pd.DataFrame, dict[str, float] | None]:
    """The rates the rule takes, from the grid's points (`grid`): each arm's final validation Mean@k at every rate
    it ran (16-GRPO at each reference rate, 2-GRPO at x1 and x8 of each), and per arm the lowest rate within NEAR
    points of its best, read alone; then the paper's rule, 2-GRPO at x8 of 16-GRPO's rate. The table: arm
    ("16-GRPO", "2-GRPO"), lr, validation Mean@k, seeds, point. The choice is None until every grid point has run
    with MIN_SEEDS seeds and a validation measurement for every arm."""
    own = rows[rows["point"].isin(grid) & (rows["prompts_per_minibatch"] == 0)]
    reference = own.drop_duplicates("point").assign(arm="16-GRPO", lr=lambda t: t["reference_lr"],
                                                    validation=lambda t: t["reference_validation"])
    table = pd.concat([reference, own.assign(arm="2-GRPO")])
    table = table[["arm", "lr", "validation", "seeds", "point"]].sort_values(["arm", "lr"], ignore_index=True)
    complete = set(own["point"]) == set(grid) and bool(grid) and not table["validation"].isna().any()
    if not complete or (table["seeds"] < MIN_SEEDS).any():
        return table, None
    chosen = {}
    for arm, runs in table.groupby("arm"):
        near = runs[runs["validation"] >= runs["validation"].max() - NEAR]
        chosen[arm] = float(near["lr"].min())
    chosen["2-GRPO by the paper's rule"] = 8 * chosen["16-GRPO"]
    return table, chosen


def reference_progress(curves: list[dict], arm: str = REFERENCE_ARM, level: float = 0.95) -> dict[str, float]:
    """What the rule reads of an arm's in-training validation accuracy (points; `curves`: a point's curve rows):
    the least-squares slope per generation step over the second half of its steps (every seed's evaluations pooled)
    with its one-sided `level` lower bound, and the gain of its last evaluation over its evaluation before training
    (mean over seeds) with its one-sided lower bound. NaN where there are too few evaluations."""
    table = pd.DataFrame(curves)
    if table.empty:
        return dict.fromkeys(("slope", "slope_low", "gain", "gain_low"), np.nan)
    table = table[table["arm"] == arm].assign(gen_step=lambda t: pd.to_numeric(t["gen_step"]),
                                              accuracy=lambda t: 100 * pd.to_numeric(t["eval_accuracy"]))
    table = table.dropna(subset=["accuracy"])
    late = table[table["gen_step"] > table["gen_step"].max() / 2]
    slope = slope_low = np.nan
    if late["gen_step"].nunique() >= 2 and len(late) >= 3:
        fit = stats.linregress(late["gen_step"], late["accuracy"])
        slope, slope_low = fit.slope, fit.slope - stats.t.ppf(level, len(late) - 2) * fit.stderr
    ordered = table.sort_values("gen_step")
    gains = [run["accuracy"].iloc[-1] - run["accuracy"].iloc[0] for _, run in ordered.groupby("seed") if len(run) >= 2]
    gain, gain_low, _ = seed_interval(np.array(gains), level=2 * level - 1)  # the two-sided 90%: one-sided 95%
    return {"slope": float(slope), "slope_low": float(slope_low), "gain": gain, "gain_low": gain_low}


def progress_table(ladder: dict, rows: pd.DataFrame, points: list[str]) -> pd.DataFrame:
    """Per point of `points`: its epochs and prompts, 16-GRPO's final validation Mean@k, what reference_progress
    reads of its in-training validation accuracy, and whether it is still improving (both one-sided bounds above 0;
    False where they cannot be read)."""
    per_point = rows.drop_duplicates("point").set_index("point")
    out = []
    for point in points:
        progress = reference_progress(ladder["points"].get(point, {}).get("curves") or [])
        out.append({"point": point, "epochs": per_point["epochs"].get(point, np.nan),
                    "prompts": per_point["prompts"].get(point, np.nan),
                    "16-GRPO validation Mean@k": per_point["reference_validation"].get(point, np.nan),
                    "16-GRPO slope, second half (points per step)": progress["slope"],
                    "its one-sided 95% lower bound": progress["slope_low"],
                    "16-GRPO gain over its base (points)": progress["gain"],
                    "gain's one-sided 95% lower bound": progress["gain_low"]})
    table = pd.DataFrame(out)
    table["still improving"] = (table["its one-sided 95% lower bound"] > 0) & (
        table["gain's one-sided 95% lower bound"] > 0)
    return table


def default_choice(ladder: dict, rows: pd.DataFrame, candidates: list[str]) -> tuple[pd.DataFrame, str | None]:
    """The candidates with what DEFAULT_RULE reads (progress_table) and the point it picks; None when a candidate
    has not run or cannot be read."""
    table = progress_table(ladder, rows, candidates)
    if table.drop(columns="still improving").isna().any(axis=None):
        return table, None
    improving = table[table["still improving"]]
    if len(improving):
        return table, str(improving.sort_values(["epochs", "prompts"], ascending=False).iloc[0]["point"])
    return table, str(table.sort_values("16-GRPO validation Mean@k", ascending=False).iloc[0]["point"])


def shares_where_learning(ladder: dict, rows: pd.DataFrame) -> pd.DataFrame:
    """Each 2-GRPO arm's share of 16-GRPO's gain at every point (with its 95% interval and one-sided bound), beside
    whether 16-GRPO is still improving there on validation (progress_table): a share read where 16-GRPO has stopped
    learning compares two arms at one ceiling. The points where it still improves come first."""
    progress = progress_table(ladder, rows, list(dict.fromkeys(rows["point"])))
    table = rows[["point", "arm", "lr_factor", "share", "share_low", "share_high", "share_bound", "seeds"]].merge(
        progress[["point", "16-GRPO slope, second half (points per step)", "its one-sided 95% lower bound",
                  "still improving"]], on="point")
    return table.sort_values(["still improving", "point", "arm"], ascending=[False, True, True], ignore_index=True)


def x8_by_rate(rows: pd.DataFrame, grid: list[str]) -> pd.DataFrame:
    """The paper's rule at each of the grid's reference rates: 2-GRPO at x8 (arm `g2`), its absolute rate, its
    validation Mean@k and its test gap to 16-GRPO. If the collapse follows the absolute rate, it appears only at the
    high rates; if it follows the rule, at every one."""
    x8 = rows[rows["point"].isin(grid) & (rows["arm"] == "g2")]
    return x8[["point", "reference_lr", "lr", "validation", "reference_validation", "gap", "low", "high",
               "seeds"]].sort_values("reference_lr", ignore_index=True)


def gap_rows(ladder: dict) -> pd.DataFrame:
    """One row per ladder point and compared arm (from reports/ladder.json, written by tools/ladder.py): the point's
    axis values (parameters, epochs), the arm's learning-rate factor against the reference arm's, the gap to the
    reference (points, with its 95% interval, standard error and degrees of freedom; NaN where the record predates
    them), the share of 16-GRPO's gain with its interval and one-sided bound, 16-GRPO's accuracy on validation, and
    per-seed means of the arm's Mean@k, discard rate (groups with
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
        validation = claims.get("validation", {})  # points recorded before validation was kept have none
        for arm, c in claims["arms"].items():
            own = runs[runs["arm"] == arm]
            calibrated = "accuracy_gap_se" in c
            out.append({"point": point, "arm": arm, "parameters": record["base"]["parameters"],
                        # the SFT base stopped at its target accuracy (a pretrained base has none: in band)
                        "base_in_band": record["base"].get("reached_target", True) is not False,
                        "epochs": record["params"]["train"]["epochs"],
                        "prompts": record["params"]["train"]["prompts"],
                        # > 0: the arm's mini-batches hold a fixed number of prompts (g2-updates: 16-GRPO's
                        # update count) rather than the rollout budget's share; its rate is not a rule's
                        "prompts_per_minibatch": record["params"]["train"]["arms"][arm].get("prompts_per_minibatch",
                                                                                              0),
                        "lr": own["lr"].mean(), "reference_lr": reference["lr"].mean(),
                        "lr_factor": own["lr"].mean() / reference["lr"].mean(),
                        # Only intervals of twogrpo.stats (they carry "accuracy_gap_se") are shown: a record of
                        # an older study holds bootstrap intervals without a calibrated seed term.
                        "gap": 100 * c["accuracy_gap"], "low": 100 * c["accuracy_gap_low"] if calibrated else np.nan,
                        "high": 100 * c["accuracy_gap_high"] if calibrated else np.nan,
                        "se": 100 * c.get("accuracy_gap_se", np.nan),
                        "df": c.get("accuracy_gap_df", np.nan), "share": c.get("share", np.nan),
                        "share_low": c.get("share_low", np.nan), "share_high": c.get("share_high", np.nan),
                        "share_se": c.get("share_se", np.nan), "share_df": c.get("share_df", np.nan),
                        "share_bound": c.get("share_lower_bound", np.nan),
                        "reference_validation": 100 * validation.get(claims["reference_arm"], {}).get("mean", np.nan),
                        "validation": 100 * validation.get(arm, {}).get("mean", np.nan),
                        "mean_at_k": 100 * own["mean_at_k"].mean(),
                        "reference_mean_at_k": 100 * reference["mean_at_k"].mean(),
                        "discard_rate": own["dead_group_frac"].mean(),
                        "reference_discard_rate": reference["dead_group_frac"].mean(),
                        "rollouts": own["rollouts"].mean(), "train_seconds": own["train_time"].mean(),
                        "reference_train_seconds": reference["train_time"].mean(),
                        "seeds": min(len(own), len(reference))})
    return pd.DataFrame(out)


def axis_verdicts(rows: pd.DataFrame, value: str, by: str = "arm", across_bases: bool = True) -> pd.DataFrame:
    """The verdict along an axis for each group of `rows` (grouped by the column `by`): its rows ordered by the
    column `value` (parameters, epochs, lr_factor) and judged by axis_verdict on AXIS_SCALES[value], for the gap in
    points and for the share of 16-GRPO's gain (its shortfall from 100%, so "narrows" means nearer a full share).
    With `across_bases` (the axis moves from point to point), "not judged" where a point's SFT base stopped below its
    target accuracy: its RL starts from a weaker policy, so the axis would mix two causes (within one point, every arm
    shares the base). Columns: `by`, verdict, verdict on the share, the gap with its interval at each value along
    the axis (text)."""
    out = []
    for key, own in rows.groupby(by, sort=False):
        gaps, shortfalls = [], []
        for _, r in own.sort_values(value).iterrows():
            name, seeds = r["point"] if by == "arm" else r["arm"], int(r["seeds"])
            gaps.append(GapPoint(r[value], r["gap"], r["low"], r["high"], r["se"], r["df"], seeds, name))
            # A share is fitted only where it has bounds: 16-GRPO's gain over the base is shown there.
            bounded = np.isfinite(r["share_low"] + r["share_high"])
            shortfalls.append(GapPoint(r[value], 100 * (r["share"] - 1), 100 * (r["share_low"] - 1),
                                       100 * (r["share_high"] - 1), 100 * r["share_se"] if bounded else np.nan,
                                       r["share_df"], seeds, name))
        path = "; ".join(f"{p.value:.3g}: {gap_text(p.gap, p.low, p.high)} ({p.seeds} seed{'s' * (p.seeds != 1)})"
                         for p in gaps)
        short = sorted(set(own.loc[~own["base_in_band"], "point"])) if across_bases else []
        out_of_band = f"not judged: the base of {', '.join(short)} is below its target" if short else None
        out.append({by: key, "verdict": out_of_band or axis_verdict(gaps, AXIS_SCALES[value]),
                    "verdict on the share": out_of_band or axis_verdict(shortfalls, AXIS_SCALES[value]),
                    f"gap by {value}": path})
    return pd.DataFrame(out)


def rate_axis_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows the learning-rate axis reads: the arms whose mini-batches follow the rollout budget (not g2-updates,
    whose x1 holds the update count equal), at the points where they train at more than one rate (not the probes,
    which vary something else at one rate)."""
    budget = rows[rows["prompts_per_minibatch"] == 0]
    return budget[budget.groupby("point")["lr_factor"].transform(lambda f: f.round(6).nunique() > 1)]


# The column each point axis is read by.
AXIS_VALUES = {"model size": "parameters", "training length": "epochs", "prompt pool": "prompts"}


def verdict_table(rows: pd.DataFrame, axes: dict[str, list[str]]) -> pd.DataFrame:
    """Every verdict of the ladder, for the report and the figures page alike: along each axis of points (`axes`:
    axis -> its points; read by AXIS_VALUES), one per 2-GRPO arm (an axis none of whose points has run reads "not
    judged"); then along the learning-rate factor (x1, x4, x8), one per point, read from rate_axis_rows. Columns:
    axis, arm (an arm, or "2-GRPO at <point>"), verdict, verdict on the share, gap along the axis (each value's gap
    with its interval and seeds)."""
    tables = []
    for axis, points in axes.items():
        value = AXIS_VALUES[axis]
        table = axis_verdicts(rows[rows["point"].isin(points)], value)
        if table.empty:  # the axis is still listed: none of its points has a run (or one at its current settings)
            none = "not judged: none of its points has run"
            table = pd.DataFrame([{"arm": "every arm", "verdict": none, "verdict on the share": none,
                                   f"gap by {value}": ""}])
        tables.append(table.rename(columns={f"gap by {value}": "gap along the axis"}).assign(axis=axis))
    rule = axis_verdicts(rate_axis_rows(rows), "lr_factor", by="point", across_bases=False)
    rule = rule.rename(columns={"point": "arm", "gap by lr_factor": "gap along the axis"})
    tables.append(rule.assign(arm="2-GRPO at " + rule["arm"], axis="learning-rate factor (x1, x4, x8)"))
    columns = ["axis", "arm", "verdict", "verdict on the share", "gap along the axis"]
    return pd.concat(tables, ignore_index=True)[columns]


PAPER_PARAMETERS = {"Qwen-1.5B": 1.5e9, "DS-1.5B": 1.5e9, "Qwen-7B": 7e9}  # as the models are named
PAPER_EPOCHS = 10  # v3 §5.1


def paper_points(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's gaps (2-GRPO minus 16-GRPO, five-benchmark average Mean@32, points) placed on the ladder's axes,
    each beside the ladder arm it corresponds to: v2 Table 1 at its model sizes (parameters) and its 10 epochs (`g2`,
    x8); v3 Table 4 against 16-GRPO over 32 prompts per mini-batch, 2-GRPO over 256 prompts at 8e-6 (`g2`: x8, the
    same rollouts per update) and over 32 prompts at 16-GRPO's 1e-6 (`g2-updates`: x1 with 16-GRPO's number of
    updates, 8 times those of the ladder's `g2-same-lr`). One row per (table, train set, model, arm): source,
    train_set, model, arm, parameters, epochs, lr_factor, gap."""
    mean = paper[paper["metric"] == "mean@32"]
    average = mean.groupby(["source", "train_set", "model", "arm"])["value"].mean()
    out = []
    for (train_set, model), runs in average.loc["v2 Table 1"].groupby(level=[0, 1]):
        runs = runs.droplevel([0, 1])
        out.append({"source": "v2 Table 1", "train_set": train_set, "model": model, "arm": "g2",
                    "parameters": PAPER_PARAMETERS[model], "epochs": PAPER_EPOCHS, "lr_factor": 8.0,
                    "gap": runs["2-GRPO"] - runs["16-GRPO"]})
    for (train_set, model), runs in average.loc["v3 Table 4"].groupby(level=[0, 1]):
        runs = runs.droplevel([0, 1])
        reference = runs["16-GRPO (32 prompts x 16; lr 1e-6)"]
        for arm, ours, factor in (("2-GRPO (32 prompts x 2; lr 1e-6)", "g2-updates", 1.0),
                                  ("2-GRPO (256 prompts x 2; lr 8e-6)", "g2", 8.0)):
            out.append({"source": "v3 Table 4", "train_set": train_set, "model": model, "arm": ours,
                        "parameters": PAPER_PARAMETERS[model], "epochs": PAPER_EPOCHS, "lr_factor": factor,
                        "gap": runs[arm] - reference})
    return pd.DataFrame(out)
