"""The study's tables: one row per evaluated model, all training curves, and the paper's three headline claims."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twogrpo.config import TrainConfig
from twogrpo.metrics import pass_at_j_curve
from twogrpo.schemas import (BenchmarkResults, DataError, EvalSamples, Summary, TrainSteps, read_table,
                             validate)

PHASE_COLUMNS = ["time_generation", "time_reward", "time_old_logprob", "time_update", "time_sync", "train_time"]
PAPER_ROLLOUT_RATIO = 2 / 16  # same prompts, same epochs: G=2 generates 1/8 of G=16's rollouts (paper §6.2)


def load_metrics(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: missing (run `dvc repro`)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Evaluated:
    """One evaluated model: its metrics.json and its per-sample records (EvalSamples)."""

    model: str
    arm: str
    seed: int | None
    metrics: dict
    samples: pd.DataFrame


def load_evaluations(cfg: TrainConfig, eval_dir: Path) -> list[Evaluated]:
    """The base policy and every arm x seed, each read once from eval/<model>/."""
    models = [("base", "base", None)] + [(f"{a}-s{s}", a, s) for a in cfg.arms for s in cfg.seeds]
    return [Evaluated(name, arm, seed, load_metrics(eval_dir / name / "metrics.json"),
                      read_table(eval_dir / name / "samples.parquet", EvalSamples)) for name, arm, seed in models]


def summarise(cfg: TrainConfig, evaluated: list[Evaluated], runs_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per model, base first; curves: every run's ledger with arm, seed and group_size)."""
    rows, curves = [], []
    for ev in evaluated:
        if ev.arm == "base":
            rows.append({"model": "base", "arm": "base", "seed": None, "group_size": None, "lr": None,
                         **_accuracy(ev.metrics), **{c: 0.0 for c in PHASE_COLUMNS}, "prompts_seen": 0, "rollouts": 0,
                         "tokens": 0, "opt_steps": 0, "dead_group_frac": None})
            continue
        arm = cfg.arms[ev.arm]
        steps = read_table(runs_dir / ev.model / "steps.parquet", TrainSteps)
        last = steps.iloc[-1]
        rows.append({"model": ev.model, "arm": ev.arm, "seed": ev.seed, "group_size": arm.group_size,
                     "lr": cfg.lr(arm), **_accuracy(ev.metrics), **{c: float(last[c]) for c in PHASE_COLUMNS},
                     "prompts_seen": int(last["prompts_seen"]), "rollouts": int(last["rollouts"]),
                     "tokens": int(last["tokens"]), "opt_steps": int(last["opt_steps"]),
                     "dead_group_frac": float(steps["dead_group_frac"].mean())})
        curves.append(steps.assign(arm=ev.arm, seed=ev.seed, group_size=arm.group_size))
    summary = validate(pd.DataFrame(rows).astype({"seed": "Int64", "group_size": "Int64"}), Summary, "summary")
    return summary, pd.concat(curves, ignore_index=True)


def benchmark_results(evaluated: list[Evaluated]) -> pd.DataFrame:
    """One row per model and benchmark (BenchmarkResults), from each model's metrics.json."""
    rows = [{"model": ev.model, "arm": ev.arm, "seed": ev.seed, "benchmark": bench, "problems": m["problems"],
             "k": m["k"], "mean_at_k": m["mean_at_k"], "pass_at_k": m["pass_at_k"]}
            for ev in evaluated for bench, m in ev.metrics["benchmarks"].items()]
    return validate(pd.DataFrame(rows).astype({"seed": "Int64"}), BenchmarkResults, "benchmark results")


def pass_curves(evaluated: list[Evaluated]) -> pd.DataFrame:
    """Pass@j for every j = 1..k per model and benchmark (the unbiased estimator, averaged over problems),
    recomputed from the per-sample records: the paper's Figure 2."""
    frames = [pass_at_j_curve(ev.samples).assign(model=ev.model, arm=ev.arm, seed=ev.seed) for ev in evaluated]
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "arm", "seed", "benchmark", "j", "pass_at_j"]].astype({"seed": "Int64"})


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


class BudgetError(AssertionError):
    """The arms did not spend the budget the study declares: the comparison would be unfair."""


def check_budgets(cfg: TrainConfig, summary: pd.DataFrame) -> None:
    """Every arm saw the same prompts for the same epochs, so rollouts are exactly prompts x epochs x G (the 2-GRPO /
    16-GRPO ratio is exactly 2/16); a resampling arm (2-GRPO+RS) stays within the reference arm's rollouts."""
    prompts = cfg.prompts_per_epoch * cfg.epochs
    reference_rollouts = prompts * cfg.reference_group_size
    for row in summary[summary["arm"] != "base"].itertuples():
        arm = cfg.arms[row.arm]
        if arm.resample:
            if row.rollouts > reference_rollouts:
                raise BudgetError(f"{row.model}: 2-GRPO+RS generated {row.rollouts} rollouts, over the reference "
                                  f"arm's budget of {reference_rollouts}")
        elif row.prompts_seen != prompts or row.rollouts != prompts * arm.group_size:
            raise BudgetError(f"{row.model}: saw {row.prompts_seen} prompts and generated {row.rollouts} rollouts; "
                              f"the study declares {prompts} prompts (the whole generation batches of train.prompts, "
                              f"x epochs) and "
                              f"{prompts * arm.group_size} rollouts (x G={arm.group_size})")


def _accuracy(metrics: dict) -> dict:
    return {"mean_at_k": metrics["mean_at_k"], "pass_at_k": metrics["pass_at_k"], "k": metrics["k"],
            **{f"mean_at_k_{grader.replace('-', '_')}": value
               for grader, value in metrics["mean_at_k_by_grader"].items()}}


def time_mode(cfg: TrainConfig) -> str:
    """Under which work the training times were measured: verl's full pass (every rollout through the old log-probs
    and the update, as the paper's hours), or with dead groups skipped (train.skip_dead_groups, a speed option that
    favours 2-GRPO, whose groups die far more often)."""
    return "dead groups skipped" if cfg.skips_dead_groups else "verl's full pass"


def claims(summary: pd.DataFrame, reference_arm: str, intervals: dict[str, dict],
           resampling_arms: frozenset[str] = frozenset(), mode: str = "verl's full pass") -> dict[str, dict]:
    """Each arm against the reference arm (16-GRPO): the paper's three claims, measured, with their uncertainty.

    accuracy_gap: arm Mean@k minus reference Mean@k (averaged over benchmarks, means over seeds; fractions, not
    points), its 95% interval from the hierarchical bootstrap (`intervals[arm]`, twogrpo.stats.bootstrap_gap: the
    average and each benchmark), and each seed's gap (seeds paired by position); rollout_ratio and time_ratio: the
    arm's mean over seeds divided by the reference's, and per seed; time_mode: the work those times measured
    (`time_mode`).
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
            "time_mode": mode,
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


def verdicts(c: dict, margin: float) -> dict[str, str]:
    """The verdict on each headline claim for one arm's entry of metrics/claims.json.

    2-GRPO: accuracy equivalent within the margin (interval test), exactly 1/8 of the rollouts, and a time ratio
    under 0.30 in every seed ("over 70% less"). 2-GRPO+RS: accuracy at least 16-GRPO's (equivalent or better),
    rollouts within 16-GRPO's, and less time in every seed.
    """
    accuracy = accuracy_verdict(c["accuracy_gap_low"], c["accuracy_gap_high"], margin)
    slowest = max(c["time_ratio_per_seed"])
    if c.get("resample"):
        return {"accuracy": "reproduced: better beyond the margin" if accuracy.endswith("better beyond the margin")
                else accuracy,
                "rollouts": "reproduced" if c["rollout_ratio"] <= 1 else "not reproduced",
                "time": "reproduced" if slowest < 1 else "not reproduced"}
    return {"accuracy": accuracy,
            "rollouts": "reproduced" if abs(c["rollout_ratio"] - PAPER_ROLLOUT_RATIO) < 1e-9 else "not reproduced",
            "time": "reproduced" if slowest < 0.30 else "not reproduced"}


def claims_table(measured: dict[str, dict], paper: pd.DataFrame, margin: float) -> pd.DataFrame:
    """The paper's headline claims, one row per claim and arm: measured value, paper value, verdict (`verdicts`).

    Paper values: for 2-GRPO, the mean over v2 Table 1's five runs of the five-benchmark Mean@32 gap and of the time
    ratio (0.210), and the rollout ratio that follows from G and the shared epochs; for 2-GRPO+RS, v3 Table 1.
    """
    runs = paper_runs(paper)
    rs_gap, rs_ratio = _paper_rs(paper)
    rows = []
    for arm, c in measured.items():
        gap, low, high = (100 * c[f"accuracy_gap{s}"] for s in ("", "_low", "_high"))
        verdict = verdicts(c, margin)
        interval = f"{gap:+.2f} [{low:+.2f}, {high:+.2f}]"
        seeds = ", ".join(f"{100 * g:+.1f}" for g in c["accuracy_gap_per_seed"])
        times = (f"{c['time_ratio']:.3f} (per seed: " + ", ".join(f"{r:.3f}" for r in c["time_ratio_per_seed"])
                 + f"; {c.get('time_mode', 'mode not recorded')})")
        if c.get("resample"):
            claims = [("2-GRPO+RS matches or beats 16-GRPO accuracy (Mean@k gap, points)",
                       f"{rs_gap:+.2f} (5-benchmark average, mean of 4 runs)"),
                      ("2-GRPO+RS stays within 16-GRPO's rollouts (ratio)", "<= 1 (capped; typically fewer)"),
                      ("2-GRPO+RS takes less training time (time ratio)", f"{rs_ratio:.3f} (mean of 4 runs)")]
        else:
            claims = [("2-GRPO matches 16-GRPO accuracy (Mean@k gap, points)",
                       f"{runs['gap_mean@32'].mean():+.2f} (5-benchmark average, mean of 5 runs)"),
                      ("1/8 of the rollouts (2-GRPO / 16-GRPO)", f"{PAPER_ROLLOUT_RATIO:.3f}"),
                      ("over 70% less training time (time ratio)", f"{runs['time_ratio'].mean():.3f} (mean of 5 runs)")]
        measured_values = [f"{interval} (per seed: {seeds})", f"{c['rollout_ratio']:.3f}", times]
        rows += [{"claim": claim, "arm": arm, "measured": value, "paper": reported, "verdict": verdict[key]}
                 for (claim, reported), value, key in zip(claims, measured_values, ("accuracy", "rollouts", "time"))]
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


def semantics_table(params, time_modes: set[str]) -> pd.DataFrame:
    """The choices a claim depends on, each with its key and value: which verifier graded the reward and the
    evaluation, how the loss was normalised, which work the times measured, the prompt order, 2-GRPO+RS's refills.
    `params` is twogrpo.config.Params; `time_modes` the time_mode of every arm in metrics/claims.json."""
    t = params.train
    rows = [
        ("evaluation grader (the accuracy claims)", "grading.evaluation", params.grading.metric),
        ("reward grader (training, in-training curves)", "grading.reward", params.grading.reward),
        ("loss normalisation", "train.loss_agg",
         f"{t.loss_agg}" + (f" (micro-batches of {t.micro_batch_tokens:,} tokens)" if t.micro_batch_tokens else
                            f" (micro-batches of {t.micro_batch_rollouts} rollouts)")
         * (t.loss_agg == "micro-token-mean")),
        ("training time measured on", "train.skip_dead_groups", ", ".join(sorted(time_modes)) or "-"),
        ("prompt order", "train.prompts",
         f"a seeded permutation of {t.prompts:,} problems every epoch, {t.prompts_per_epoch:,} trained on "
         f"(whole generation batches of {t.generation_batch_prompts})"),
    ]
    if any(arm.resample for arm in t.arms.values()):
        rows.append(("2-GRPO+RS refills", "train.arms.<arm>.resample",
                     "from the same prompt stream, within the reference arm's rollouts per step; the same "
                     "generation steps as the other arms"))
    return pd.DataFrame(rows, columns=["choice", "key", "value"])


def grader_table(summary: pd.DataFrame, reference_arm: str) -> pd.DataFrame:
    """Mean@k (points, mean over seeds) of every arm under each grader, and the gap to the reference arm under each:
    the same samples, graded three ways."""
    columns = {"math-verify": "mean_at_k_math_verify", "verl-math": "mean_at_k_verl_math",
               "verl-dapo": "mean_at_k_verl_dapo"}
    means = 100 * summary.groupby("arm", sort=False)[list(columns.values())].mean()
    means.columns = list(columns)
    gaps = means.drop(index=["base", reference_arm], errors="ignore") - means.loc[reference_arm]
    return pd.concat({"Mean@k": means, f"gap to {reference_arm}": gaps}, axis=1)
