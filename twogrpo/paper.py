"""The comparison with the paper's reported numbers (data/paper/tables.csv: arXiv 2510.00977 v2 Table 1, v3 Tables 1
to 4): the paper's arm each of ours reproduces, the Table 1 layout with the paper's rows beside ours, the paper's
runs, its covariance (Table 2) and discard rates (Table 3), and the verdict on each headline claim."""

from __future__ import annotations

import numpy as np
import pandas as pd

from twogrpo.config import TrainConfig

PAPER_ROLLOUT_RATIO = 2 / 16  # same prompts, same epochs: G=2 generates 1/8 of G=16's rollouts (paper v2 §6.2)


def paper_arm(cfg: TrainConfig, name: str) -> tuple[str, str]:
    """The paper's (table, arm) in data/paper/tables.csv that our arm `name` ("base" included) reproduces."""
    if name == "base":
        return "v2 Table 1", "base"
    arm = cfg.arms[name]
    if arm.resample:
        return "v3 Table 1", "2-GRPO+RS"
    if arm.prompts_per_minibatch:
        q, g = arm.prompts_per_minibatch, arm.group_size
        return "v3 Table 4", f"{g}-GRPO ({q} prompts x {g}; lr {cfg.lr(arm):.0e})".replace("e-0", "e-")
    return "v2 Table 1", f"{arm.group_size}-GRPO"


def table1_layout(bench: pd.DataFrame, summary: pd.DataFrame, paper: pd.DataFrame, cfg: TrainConfig, model: str,
                  train_set: str, benchmarks: tuple[str, ...]) -> pd.DataFrame:
    """The paper's Table 1 layout: a row for the base policy (w/o), one per arm and one difference row (Δ) per arm
    against the reference arm; columns: training time, then "Mean@k / Pass@k" (points) per benchmark and their
    unweighted average (Avg). Our rows (means over seeds; time in seconds) first, then the paper's rows for the same
    model and train set (time in hours; v2 Table 1, v3 Table 1 for RS, v3 Table 4 for the ablation), when it has them.
    The time of a Δ row is the relative change, as in the paper."""
    ours = bench.groupby(["arm", "benchmark"], sort=False)[["mean_at_k", "pass_at_k"]].mean().mul(100)
    seconds = summary.groupby("arm", sort=False)["train_time"].mean()
    arms = ["base", *cfg.arms]
    our_cells = {arm: ({b: tuple(ours.loc[(arm, b)]) for b in benchmarks}, seconds.get(arm) if arm != "base" else None)
                 for arm in arms}
    labels = {arm: "base (w/o)" if arm == "base" else f"{arm} (G={cfg.arms[arm].group_size})" for arm in arms}
    rows = _table1_rows("ours", our_cells, labels, cfg.reference_arm, benchmarks, "s")
    paper_cells, paper_labels = {}, {}
    for arm in arms:
        source, name = paper_arm(cfg, arm)
        found = paper[(paper["source"] == source) & (paper["model"] == model) & (paper["train_set"] == train_set)
                      & (paper["arm"] == name)]
        values = found.set_index(["benchmark", "metric"])["value"]
        if not all((b, m) in values for b in benchmarks for m in ("mean@32", "pass@32")):
            continue
        hours = values.get(("all", "train_hours"))
        paper_cells[arm] = ({b: (values[(b, "mean@32")], values[(b, "pass@32")]) for b in benchmarks}, hours)
        paper_labels[arm] = name
    if cfg.reference_arm in paper_cells:
        rows += _table1_rows("paper", paper_cells, paper_labels, cfg.reference_arm, benchmarks, "h")
    table = pd.DataFrame.from_dict(dict(rows), orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["", "G"])
    return table


def _table1_rows(source: str, cells: dict, labels: dict, reference: str, benchmarks: tuple[str, ...],
                 unit: str) -> list[tuple[tuple[str, str], dict]]:
    """Formatted rows: each arm's "mean / pass" per benchmark and Avg, then Δ rows (arm - reference)."""
    def average(per_bench: dict) -> tuple[float, float]:
        return tuple(float(np.mean([per_bench[b][i] for b in benchmarks])) for i in (0, 1))

    rows = []
    for arm, (per_bench, time) in cells.items():
        row = {"time": "-" if time is None or pd.isna(time) else f"{time:.{1 if unit == 's' else 2}f} {unit}"}
        row |= {b: f"{per_bench[b][0]:.2f} / {per_bench[b][1]:.2f}" for b in benchmarks}
        row["Avg"] = "{:.2f} / {:.2f}".format(*average(per_bench))
        rows.append(((source, labels[arm]), row))
    ref_bench, ref_time = cells[reference]
    for arm, (per_bench, time) in cells.items():
        if arm in ("base", reference):
            continue
        both = [(b, per_bench[b], ref_bench[b]) for b in benchmarks]
        row = {"time": "-" if time is None or ref_time is None or pd.isna(time) or pd.isna(ref_time)
               else f"{100 * (time - ref_time) / ref_time:+.2f}%"}
        row |= {b: f"{x[0] - y[0]:+.2f} / {x[1] - y[1]:+.2f}" for b, x, y in both}
        (am, ap), (rm, rp) = average(per_bench), average(ref_bench)
        row["Avg"] = f"{am - rm:+.2f} / {ap - rp:+.2f}"
        rows.append(((source, f"Δ {labels[arm]} - {labels[reference]}"), row))
    return rows


MIN_SEEDS = 3  # a verdict needs at least this many seeds per arm


def not_judged(c: dict) -> str | None:
    """Why one arm's accuracy claims (an entry of metrics/claims.json) cannot be judged, or None: fewer than
    MIN_SEEDS seeds ("not judged"); or nothing measured ("not measured"): no sample of any model graded correct (a
    grader that reads nothing), or a reference arm that does not beat the base by its 95% interval (a collapsed or
    untrained reference, a broken evaluation), which would otherwise read as a match. A record without the share
    (written by an older version) is not judged either."""
    if "share_lower_bound" not in c:
        return "not judged: the record has no share of the gain or seed-aware interval"
    if c["seeds"] < MIN_SEEDS:
        return f"not judged: {c['seeds']} seed{'s' * (c['seeds'] != 1)} (a verdict needs {MIN_SEEDS})"
    if c.get("nothing_correct"):
        return "not measured: every model scored 0 under this grader"
    if not c["reference_gain_low"] > 0:
        return (f"not measured: 16-GRPO did not improve on the base (gain {100 * c['reference_gain']:+.2f} points, "
                f"95% interval [{100 * c['reference_gain_low']:+.2f}, {100 * c['reference_gain_high']:+.2f}])")
    return None


def share_verdict(lower_bound: float, high: float, margin: float) -> str:
    """Non-inferiority on the share of the gain: its one-sided 95% lower bound against the margin."""
    if lower_bound >= margin:
        return f"reproduced: keeps at least {margin:.0%} of the gain"
    if high < margin:
        return f"not reproduced: keeps less than {margin:.0%} of the gain"
    return f"not shown: the lower bound is below {margin:.0%}"


def accuracy_verdict(low: float, high: float, margin: float) -> str:
    """Equivalence test by interval: the gap's 95% interval [low, high] against +-margin."""
    if -margin <= low and high <= margin:
        return "reproduced: equivalent within the margin"
    if high < -margin:
        return "not reproduced: worse beyond the margin"
    if low > margin:
        return "not reproduced: better beyond the margin"
    return "not shown: the interval crosses the margin"


def paper_covariance(paper: pd.DataFrame) -> dict[str, float]:
    """v3 Table 2 (App. B.8): Cov(g+, g-) of a prompt's right and wrong rollouts, and of permuted pairs."""
    t2 = paper[paper["source"] == "v3 Table 2"].set_index("metric")["value"]
    return {"cov_same_prompt": float(t2["cov_same_prompt"]), "cov_permuted": float(t2["cov_permuted"])}


def paper_discard_rates(paper: pd.DataFrame) -> pd.DataFrame:
    """v3 Table 3 (App. D.3): 2-GRPO's fraction of discarded groups by training step (Qwen-7B on MATH, about 140
    steps in all)."""
    t3 = paper[paper["source"] == "v3 Table 3"]
    return pd.DataFrame({"step": t3["metric"].str.removeprefix("discard_rate@").astype(int).to_numpy(),
                         "P_discard": t3["value"].to_numpy()})


def paper_runs(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's v2 Table 1, one row per run (train set x model): the five-benchmark average Mean@32 and Pass@32 of
    the base model, 2-GRPO and 16-GRPO, the gap, 2-GRPO's share of 16-GRPO's gain over the base, the hours and the
    2-GRPO / 16-GRPO time ratio."""
    t1 = paper[paper["source"] == "v2 Table 1"]
    acc = (t1[t1["metric"].isin(["mean@32", "pass@32"])]
           .pivot_table(index=["train_set", "model"], columns=["arm", "metric"], values="value", aggfunc="mean"))
    hours = t1[t1["metric"] == "train_hours"].pivot_table(index=["train_set", "model"], columns="arm", values="value")
    out = pd.DataFrame({
        "base_mean@32": acc[("base", "mean@32")], "2-GRPO_mean@32": acc[("2-GRPO", "mean@32")],
        "16-GRPO_mean@32": acc[("16-GRPO", "mean@32")], "base_pass@32": acc[("base", "pass@32")],
        "2-GRPO_pass@32": acc[("2-GRPO", "pass@32")], "16-GRPO_pass@32": acc[("16-GRPO", "pass@32")],
        "2-GRPO_hours": hours["2-GRPO"], "16-GRPO_hours": hours["16-GRPO"],
    })
    out["gap_mean@32"] = out["2-GRPO_mean@32"] - out["16-GRPO_mean@32"]
    out["share_mean@32"] = ((out["2-GRPO_mean@32"] - out["base_mean@32"])
                            / (out["16-GRPO_mean@32"] - out["base_mean@32"]))
    out["time_ratio"] = out["2-GRPO_hours"] / out["16-GRPO_hours"]
    return out.reset_index()


def verdicts(c: dict, margin: float, share_margin: float | None) -> dict[str, str]:
    """The verdict on each headline claim for one arm's entry of metrics/claims.json.

    Accuracy, two readings of one measurement (both "not judged" under `not_judged`): "accuracy", the verdict, keeps
    at least `share_margin` of 16-GRPO's gain (non-inferiority on the share: "matches" for 2-GRPO, "matches or beats"
    for 2-GRPO+RS); "accuracy_points", the gap's 95% interval against +-`margin`. 2-GRPO: exactly 1/8 of the
    rollouts, and a time ratio under 0.30 in every seed ("over 70% less"). 2-GRPO+RS: rollouts within 16-GRPO's,
    and less time in every seed. The time claim is not judged when a run was timed under contention.
    """
    reason = not_judged(c) or (None if share_margin is not None else "not judged: its params have no share margin")
    share = reason or share_verdict(c["share_lower_bound"], c["share_high"], share_margin)
    points = reason or accuracy_verdict(c["accuracy_gap_low"], c["accuracy_gap_high"], margin)
    slowest = max(c["time_ratio_per_seed"])
    if c.get("resample"):
        return {"accuracy": share,
                "accuracy_points": "reproduced: better beyond the margin" if points.endswith("better beyond the margin")
                else points,
                "rollouts": "reproduced" if c["rollout_ratio"] <= 1 else "not reproduced",
                "time": time_verdict(c, slowest < 1)}
    return {"accuracy": share, "accuracy_points": points,
            "rollouts": "reproduced" if abs(c["rollout_ratio"] - PAPER_ROLLOUT_RATIO) < 1e-9 else "not reproduced",
            "time": time_verdict(c, slowest < 0.30)}


def headline(claimed: dict, margin: float, share_margin: float) -> dict[str, dict]:
    """What `dvc exp show` compares (metrics/verdicts.json): per arm against the reference, the gap in points with
    its 95% interval, the share of the gain with its one-sided 95% bound, the rollout and time ratios, and the
    verdicts (`verdicts`), rounded for a terminal's columns. Every other number stays in metrics/claims.json."""
    out = {}
    for arm, c in claimed["arms"].items():
        out[arm] = {"gap": round(100 * c["accuracy_gap"], 2), "gap_low": round(100 * c["accuracy_gap_low"], 2),
                    "gap_high": round(100 * c["accuracy_gap_high"], 2), "share": round(c["share"], 3),
                    "share_bound": round(c["share_lower_bound"], 3), "rollout_ratio": round(c["rollout_ratio"], 3),
                    "time_ratio": round(c["time_ratio"], 3), "verdict": verdicts(c, margin, share_margin)}
    return out


def time_verdict(c: dict, holds: bool) -> str:
    """The time claim's verdict: "not judged" when a run of the arm or of the reference was timed under contention
    (twogrpo.summary.contended), for its wall-clock then measures the neighbours as much as the arm."""
    if busy := c.get("timed_under_contention"):
        waits = ", ".join(f"{model} {share:.0%}" for model, share in busy.items())
        return f"not judged: timed under contention (share of the time waiting for a CPU: {waits})"
    return "reproduced" if holds else "not reproduced"


def share_text(c: dict) -> str:
    """An arm's share of the gain as the claims table shows it: value, 95% interval, one-sided bound."""
    if c["seeds"] < 2:
        return f"{c['share']:.0%} (no interval: one seed has no seed variance)"
    if not np.isfinite(c["share_low"] + c["share_high"]):
        return (f"{c['share']:.0%} (no 95% bound: 16-GRPO's gain {100 * c['reference_gain']:+.2f} points is not "
                f"distinguished from 0)")
    return (f"{c['share']:.0%} [{c['share_low']:.0%}, {c['share_high']:.0%}]; one-sided 95% bound "
            f"{c['share_lower_bound']:.0%} (16-GRPO's gain {100 * c['reference_gain']:+.2f} points)")


def claims_table(measured: dict[str, dict], paper: pd.DataFrame, margin: float, share_margin: float) -> pd.DataFrame:
    """The paper's headline claims, one row per claim and arm: measured value, paper value, verdict (`verdicts`).
    The accuracy claim has two rows, its two readings: the share of the gain (the verdict) and the gap in points.

    Paper values: for 2-GRPO, the mean over v2 Table 1's five runs of the five-benchmark Mean@32 share of the gain,
    of the gap and of the time ratio (0.210), and the rollout ratio that follows from G and the shared epochs; for
    2-GRPO+RS, v3 Table 1.
    """
    runs = paper_runs(paper)
    rs_gap, rs_ratio = _paper_rs(paper)
    rows = []
    for arm, c in measured.items():
        gap, low, high = (100 * c[f"accuracy_gap{s}"] for s in ("", "_low", "_high"))
        verdict = verdicts(c, margin, share_margin)
        interval = f"{gap:+.2f} [{low:+.2f}, {high:+.2f}]"
        seeds = ", ".join(f"{100 * g:+.1f}" for g in c["accuracy_gap_per_seed"])
        notes = [", ".join(f"{r:.3f}" for r in c["time_ratio_per_seed"]), c.get("time_mode", "mode not recorded"),
                 f"on CPU seconds {c['time_ratio_cpu']:.3f}" if "time_ratio_cpu" in c else "CPU seconds not recorded"]
        if c.get("timed_under_contention", {}) is None:
            notes.append("contention not measured on this system")
        times = f"{c['time_ratio']:.3f} (per seed: " + "; ".join(notes) + ")"
        if c.get("resample"):
            claims = [(f"2-GRPO+RS matches or beats 16-GRPO accuracy: share of its gain kept (verdict: bound >= "
                       f"{share_margin:.0%})", "-"),
                      ("2-GRPO+RS matches or beats 16-GRPO accuracy: Mean@k gap, points (reading in points)",
                       f"{rs_gap:+.2f} (5-benchmark average, mean of 4 runs)"),
                      ("2-GRPO+RS stays within 16-GRPO's rollouts (ratio)", "<= 1 (capped; typically fewer)"),
                      ("2-GRPO+RS takes less training time (time ratio)", f"{rs_ratio:.3f} (mean of 4 runs)")]
        else:
            shares = runs["share_mean@32"]
            claims = [(f"2-GRPO matches 16-GRPO accuracy: share of its gain kept (verdict: bound >= "
                       f"{share_margin:.0%})",
                       f"{shares.mean():.0%} (mean of 5 runs, {shares.min():.0%}-{shares.max():.0%})"),
                      ("2-GRPO matches 16-GRPO accuracy: Mean@k gap, points (reading in points)",
                       f"{runs['gap_mean@32'].mean():+.2f} (5-benchmark average, mean of 5 runs)"),
                      ("1/8 of the rollouts (2-GRPO / 16-GRPO)", f"{PAPER_ROLLOUT_RATIO:.3f}"),
                      ("over 70% less training time (time ratio)", f"{runs['time_ratio'].mean():.3f} (mean of 5 runs)")]
        measured_values = [share_text(c), f"{interval} (per seed: {seeds})", f"{c['rollout_ratio']:.3f}", times]
        rows += [{"claim": claim, "arm": arm, "measured": value, "paper": reported, "verdict": verdict[key]}
                 for (claim, reported), value, key in zip(claims, measured_values,
                                                          ("accuracy", "accuracy_points", "rollouts", "time"),
                                                          strict=True)]
    return pd.DataFrame(rows)


def _paper_rs(paper: pd.DataFrame) -> tuple[float, float]:
    """Means over the paper's four 2-GRPO+RS runs (v3 Table 1) of the five-benchmark Mean@32 gap to 16-GRPO
    (points) and of RS hours / 16-GRPO hours."""
    def per_run(metric: str) -> pd.DataFrame:
        rows = paper[paper["metric"] == metric]
        return rows.pivot_table(index=["train_set", "model"], columns="arm", values="value", aggfunc="mean")
    acc, hours = per_run("mean@32"), per_run("train_hours")
    gap = (acc["2-GRPO+RS"] - acc["16-GRPO"]).dropna()
    return float(gap.mean()), float((hours["2-GRPO+RS"] / hours["16-GRPO"]).dropna().mean())
