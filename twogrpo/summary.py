"""The study's tables: one row per evaluated model, all training curves, and the paper's three headline claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from twogrpo.config import TrainConfig
from twogrpo.schemas import BenchmarkResults, DataError, Summary, TrainSteps, read_table, validate

PHASE_COLUMNS = ["time_generation", "time_reward", "time_old_logprob", "time_update", "time_sync", "train_time"]
PAPER_ROLLOUT_RATIO = 2 / 16  # same prompts, same epochs: G=2 generates 1/8 of G=16's rollouts (paper §6.2)


def load_metrics(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: missing (run `dvc repro`)")
    return json.loads(path.read_text())


def summarise(cfg: TrainConfig, eval_dir: Path, runs_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per model, base first; curves: every run's ledger with arm, seed and group_size)."""
    rows, curves = [], []
    base = load_metrics(eval_dir / "base" / "metrics.json")
    rows.append({"model": "base", "arm": "base", "seed": None, "group_size": None, "lr": None,
                 **_accuracy(base), **{c: 0.0 for c in PHASE_COLUMNS}, "prompts_seen": 0, "rollouts": 0, "tokens": 0,
                 "opt_steps": 0, "dead_group_frac": None})
    for arm_name, arm in cfg.arms.items():
        for seed in cfg.seeds:
            name = f"{arm_name}-s{seed}"
            steps = read_table(runs_dir / name / "steps.parquet", TrainSteps)
            last = steps.iloc[-1]
            rows.append({"model": name, "arm": arm_name, "seed": seed, "group_size": arm.group_size,
                         "lr": cfg.lr(arm), **_accuracy(load_metrics(eval_dir / name / "metrics.json")),
                         **{c: float(last[c]) for c in PHASE_COLUMNS}, "prompts_seen": int(last["prompts_seen"]),
                         "rollouts": int(last["rollouts"]), "tokens": int(last["tokens"]),
                         "opt_steps": int(last["opt_steps"]),
                         "dead_group_frac": float(steps["dead_group_frac"].mean())})
            curves.append(steps.assign(arm=arm_name, seed=seed, group_size=arm.group_size))
    summary = validate(pd.DataFrame(rows).astype({"seed": "Int64", "group_size": "Int64"}), Summary, "summary")
    return summary, pd.concat(curves, ignore_index=True)


def benchmark_results(cfg: TrainConfig, eval_dir: Path) -> pd.DataFrame:
    """One row per model and benchmark (BenchmarkResults), from eval/<model>/metrics.json."""
    models = [("base", "base", None)] + [(f"{a}-s{s}", a, s) for a in cfg.arms for s in cfg.seeds]
    rows = [{"model": name, "arm": arm, "seed": seed, "benchmark": bench, "problems": m["problems"], "k": m["k"],
             "mean_at_k": m["mean_at_k"], "pass_at_k": m["pass_at_k"]}
            for name, arm, seed in models
            for bench, m in load_metrics(eval_dir / name / "metrics.json")["benchmarks"].items()]
    return validate(pd.DataFrame(rows).astype({"seed": "Int64"}), BenchmarkResults, "benchmark results")


def pass_curves(cfg: TrainConfig, eval_dir: Path) -> pd.DataFrame:
    """Pass@j for j = 1, 2, 4, ..., k (unbiased estimator) per model and benchmark, one row each: the paper's Fig. 2."""
    models = [("base", "base", None)] + [(f"{a}-s{s}", a, s) for a in cfg.arms for s in cfg.seeds]
    rows = [{"model": name, "arm": arm, "seed": seed, "benchmark": bench, "j": int(key.removeprefix("pass_at_")),
             "pass_at_j": value}
            for name, arm, seed in models
            for bench, m in load_metrics(eval_dir / name / "metrics.json")["benchmarks"].items()
            for key, value in m.items() if key.startswith("pass_at_") and key != "pass_at_k"]
    return pd.DataFrame(rows).astype({"seed": "Int64"})


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


def beside_paper(bench: pd.DataFrame, paper: pd.DataFrame, cfg: TrainConfig, model: str, train_set: str,
                 benchmarks: tuple[str, ...], metric: str = "mean") -> pd.DataFrame:
    """One row per arm (with the paper's name for it), two columns per benchmark and for their average: ours (Mean@k
    or Pass@k in points, mean over seeds) and the paper's (Mean@32 or Pass@32) for the same model and train set;
    NaN where the paper has no such run. metric: "mean" or "pass"."""
    ours = bench.groupby(["arm", "benchmark"], sort=False)[f"{metric}_at_k"].mean().mul(100)
    rows = {}
    for arm in bench["arm"].unique():
        source, name = paper_arm(cfg, arm)
        reported = paper[(paper["source"] == source) & (paper["model"] == model) & (paper["train_set"] == train_set)
                         & (paper["arm"] == name) & (paper["metric"] == f"{metric}@32")].set_index("benchmark")["value"]
        mine = [ours[(arm, b)] for b in benchmarks]
        theirs = [reported.get(b, np.nan) for b in benchmarks]
        row = {}
        for b, x, y in zip([*benchmarks, "average"], [*mine, np.mean(mine)], [*theirs, np.mean(theirs)]):
            row[(b, "ours")], row[(b, "paper")] = x, y
        rows[(arm, name)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["arm", "paper arm"]
    return table


class BudgetError(AssertionError):
    """The arms did not spend the budget the study declares: the comparison would be unfair."""


def check_budgets(cfg: TrainConfig, summary: pd.DataFrame) -> None:
    """Every arm saw the same prompts for the same epochs, so rollouts are exactly prompts x epochs x G (the 2-GRPO /
    16-GRPO ratio is exactly 2/16); a resampling arm (2-GRPO+RS) stays within the reference arm's rollouts."""
    prompts = cfg.prompts * cfg.epochs
    reference_rollouts = prompts * cfg.reference_group_size
    for row in summary[summary["arm"] != "base"].itertuples():
        arm = cfg.arms[row.arm]
        if arm.resample:
            if row.rollouts > reference_rollouts:
                raise BudgetError(f"{row.model}: 2-GRPO+RS generated {row.rollouts} rollouts, over the reference "
                                  f"arm's budget of {reference_rollouts}")
        elif row.prompts_seen != prompts or row.rollouts != prompts * arm.group_size:
            raise BudgetError(f"{row.model}: saw {row.prompts_seen} prompts and generated {row.rollouts} rollouts; "
                              f"the study declares {prompts} prompts (train.prompts x epochs) and "
                              f"{prompts * arm.group_size} rollouts (x G={arm.group_size})")


def _accuracy(metrics: dict) -> dict:
    return {"mean_at_k": metrics["mean_at_k"], "pass_at_k": metrics["pass_at_k"], "k": metrics["k"]}


def claims(summary: pd.DataFrame, reference_arm: str, intervals: dict[str, dict],
           resampling_arms: frozenset[str] = frozenset()) -> dict[str, dict]:
    """Each arm against the reference arm (16-GRPO): the paper's three claims, measured, with their uncertainty.

    accuracy_gap: arm Mean@k minus reference Mean@k (averaged over benchmarks, means over seeds; fractions, not
    points), its 95% interval from the hierarchical bootstrap (`intervals[arm]`, twogrpo.stats.bootstrap_gap: the
    average and each benchmark), and each seed's gap (seeds paired by position); rollout_ratio and time_ratio: the
    arm's mean over seeds divided by the reference's, and per seed.
    """
    trained = summary[summary["arm"] != "base"]
    ref = trained[trained["arm"] == reference_arm].sort_values("seed")
    if ref.empty:
        raise DataError(f"summary: no runs of the reference arm {reference_arm!r}")
    out = {}
    for arm, runs in trained.groupby("arm", sort=False):
        if arm == reference_arm:
            continue
        runs = runs.sort_values("seed")
        a, r = runs["mean_at_k"].to_numpy(), ref["mean_at_k"].to_numpy()
        n = min(len(a), len(r))
        out[arm] = {
            "resample": arm in resampling_arms,
            "accuracy_gap": float(a.mean() - r.mean()),
            "accuracy_gap_low": intervals[arm]["average"]["low"],
            "accuracy_gap_high": intervals[arm]["average"]["high"],
            "accuracy_gap_per_benchmark": intervals[arm],
            "accuracy_gap_per_seed": [float(x) for x in a[:n] - r[:n]],
            "rollout_ratio": float(runs["rollouts"].mean() / ref["rollouts"].mean()),
            "time_ratio": float(runs["train_time"].mean() / ref["train_time"].mean()),
            "time_ratio_per_seed": [float(x) for x in
                                    runs["train_time"].to_numpy()[:n] / ref["train_time"].to_numpy()[:n]],
        }
    return out


def accuracy_verdict(low: float, high: float, margin: float) -> str:
    """Equivalence test by interval: the gap's 95% interval [low, high] against +-margin."""
    if -margin <= low and high <= margin:
        return "reproduced: equivalent within the margin"
    if high < -margin:
        return "not reproduced: worse beyond the margin"
    if low > margin:
        return "not reproduced: better beyond the margin"
    return "not shown: the interval crosses the margin"


def paper_runs(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's v2 Table 1, one row per run (train set x model): the five-benchmark average Mean@32 and Pass@32 of
    the base model, 2-GRPO and 16-GRPO, the gap, the hours and the 2-GRPO / 16-GRPO time ratio."""
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
    out["time_ratio"] = out["2-GRPO_hours"] / out["16-GRPO_hours"]
    return out.reset_index()


def claims_table(measured: dict[str, dict], paper: pd.DataFrame, margin: float) -> pd.DataFrame:
    """The paper's headline claims, one row per claim and arm: measured value, paper value, verdict.

    2-GRPO arms: equal accuracy, 1/8 of the rollouts, over 70% less time (paper v2 Table 1: the mean over its five
    runs of the five-benchmark Mean@32 gap and of the time ratio, 0.210; the rollout ratio follows from G and the
    shared epochs). 2-GRPO+RS arms: at least 16-GRPO's accuracy, within its rollout budget, in less time (v3 Table 1).
    """
    runs = paper_runs(paper)
    rs_gap, rs_ratio = _paper_rs(paper)
    rows = []
    for arm, c in measured.items():
        gap, low, high = (100 * c[f"accuracy_gap{s}"] for s in ("", "_low", "_high"))
        verdict = accuracy_verdict(c["accuracy_gap_low"], c["accuracy_gap_high"], margin)
        interval = f"{gap:+.2f} [{low:+.2f}, {high:+.2f}]"
        seeds = ", ".join(f"{100 * g:+.1f}" for g in c["accuracy_gap_per_seed"])
        times = f"{c['time_ratio']:.3f} (per seed: " + ", ".join(f"{r:.3f}" for r in c["time_ratio_per_seed"]) + ")"
        fast = max(c["time_ratio_per_seed"])
        if c.get("resample"):
            rows += [
                {"claim": "2-GRPO+RS matches or beats 16-GRPO accuracy (Mean@k gap, points)", "arm": arm,
                 "measured": f"{interval} (per seed: {seeds})", "paper": f"{rs_gap:+.2f} (5-benchmark average, mean of 4 runs)",
                 "verdict": "reproduced: better beyond the margin" if verdict.endswith("better beyond the margin")
                 else verdict},
                {"claim": "2-GRPO+RS stays within 16-GRPO's rollouts (ratio)", "arm": arm,
                 "measured": f"{c['rollout_ratio']:.3f}", "paper": "<= 1 (capped; typically fewer)",
                 "verdict": "reproduced" if c["rollout_ratio"] <= 1 else "not reproduced"},
                {"claim": "2-GRPO+RS takes less training time (time ratio)", "arm": arm, "measured": times,
                 "paper": f"{rs_ratio:.3f} (mean of 4 runs)", "verdict": "reproduced" if fast < 1 else "not reproduced"},
            ]
            continue
        rows += [
            {"claim": "2-GRPO matches 16-GRPO accuracy (Mean@k gap, points)", "arm": arm,
             "measured": f"{interval} (per seed: {seeds})",
             "paper": f"{runs['gap_mean@32'].mean():+.2f} (5-benchmark average, mean of 5 runs)", "verdict": verdict},
            {"claim": "1/8 of the rollouts (2-GRPO / 16-GRPO)", "arm": arm, "measured": f"{c['rollout_ratio']:.3f}",
             "paper": f"{PAPER_ROLLOUT_RATIO:.3f}",
             "verdict": "reproduced" if abs(c["rollout_ratio"] - PAPER_ROLLOUT_RATIO) < 1e-9 else "not reproduced"},
            {"claim": "over 70% less training time (time ratio)", "arm": arm, "measured": times,
             "paper": f"{runs['time_ratio'].mean():.3f} (mean of 5 runs)",
             "verdict": "reproduced" if fast < 0.30 else "not reproduced"},
        ]
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


def results_table(summary: pd.DataFrame, reference_arm: str) -> pd.DataFrame:
    """Per arm: Mean@k and Pass@k in points (mean and std over seeds), difference to the reference arm, rollouts,
    optimizer steps and training seconds."""
    grouped = summary.groupby("arm", sort=False)
    out = pd.DataFrame({
        "G": grouped["group_size"].first(), "lr": grouped["lr"].first(), "seeds": grouped.size(),
        "Mean@k": 100 * grouped["mean_at_k"].mean(), "Mean@k std": 100 * grouped["mean_at_k"].std(),
        "Pass@k": 100 * grouped["pass_at_k"].mean(), "Pass@k std": 100 * grouped["pass_at_k"].std(),
        "rollouts": grouped["rollouts"].mean(), "optimizer steps": grouped["opt_steps"].mean(),
        "train s": grouped["train_time"].mean(),
    })
    out.insert(5, "Mean@k diff", out["Mean@k"] - out.loc[reference_arm, "Mean@k"])
    return out
