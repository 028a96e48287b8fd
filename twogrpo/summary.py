"""The study's own tables: one row per evaluated model, all training curves, each arm's claims measured against the
reference arm, and the report's tables of them. The comparison with the paper's numbers is twogrpo.paper."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from twogrpo.choices import PHASES
from twogrpo.config import TrainConfig
from twogrpo.metrics import pass_at_j_curve
from twogrpo.schemas import BenchmarkResults, DataError, EvalSamples, Summary, TrainSteps, read_table, validate
from twogrpo.stats import Cells, contrast, gap, share

PHASE_COLUMNS = [*(f"time_{p}" for p in PHASES), "train_time", "train_cpu_time"]
# A run was timed under contention when its threads waited for a CPU longer than this share of its training
# wall-clock (docs/report.md#timings-under-contention; measured: docs/figures.md#timings-under-contention).
CONTENDED_WAIT_SHARE = 0.10


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
                         **_accuracy(ev.metrics), **{c: 0.0 for c in PHASE_COLUMNS}, "cpu_wait_share": None,
                         "load_max": None, "prompts_seen": 0, "rollouts": 0, "tokens": 0, "opt_steps": 0,
                         "dead_group_frac": None})
            continue
        arm = cfg.arms[ev.arm]
        steps = read_table(runs_dir / ev.model / "steps.parquet", TrainSteps)
        last = steps.iloc[-1]
        rows.append({"model": ev.model, "arm": ev.arm, "seed": ev.seed, "group_size": arm.group_size,
                     "lr": cfg.lr(arm), **_accuracy(ev.metrics), **{c: float(last[c]) for c in PHASE_COLUMNS},
                     "cpu_wait_share": float(last["train_cpu_wait"] / last["train_time"]),
                     "load_max": float(steps["load_average"].max()),
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


def accuracy_claims(cells: dict[str, Cells], reference_arm: str) -> dict[str, dict]:
    """Each arm's accuracy against the reference arm (fractions; twogrpo.stats, 95% intervals carrying the seed,
    problem and sample variance): accuracy_gap (arm - reference Mean@k, each benchmark counting once) with low, high,
    se, df and per benchmark; share (the arm's share of the reference's gain over the base, Fieller's interval) with
    share_lower_bound, its one-sided 95% lower bound (the non-inferiority test); reference_gain (reference - base)
    with its interval; seeds (the fewer of the arm's and the reference's); nothing_correct (no sample of any model
    graded correct: the grader read nothing). `cells` holds "base" (fixed) and every arm."""
    ref, base = cells[reference_arm], cells["base"]
    gain = gap(ref, base)
    nothing_correct = all(not c.correct.any() for c in cells.values())
    out = {}
    for arm, own in cells.items():
        if arm in ("base", reference_arm):
            continue
        g = gap(own, ref)
        s, s90 = share(own, ref, base), share(own, ref, base, level=0.90)
        per_benchmark = {}
        for b in dict.fromkeys(own.benchmark):
            i = gap(own.only(b), ref.only(b))
            per_benchmark[b] = {"gap": i.value, "low": i.low, "high": i.high}
        out[arm] = {"accuracy_gap": g.value, "accuracy_gap_low": g.low, "accuracy_gap_high": g.high,
                    "accuracy_gap_se": g.se, "accuracy_gap_df": g.df, "accuracy_gap_per_benchmark": per_benchmark,
                    "share": s.value, "share_low": s.low, "share_high": s.high, "share_se": s.se, "share_df": s.df,
                    "share_lower_bound": s90.low, "reference_gain": gain.value, "reference_gain_low": gain.low,
                    "reference_gain_high": gain.high, "seeds": int(min(own.seeds, ref.seeds)),
                    "nothing_correct": nothing_correct}
    return out


def validation_claims(cells: dict[str, Cells], reference_arm: str) -> dict[str, dict]:
    """Per arm on the validation problems (fractions, 95% intervals): mean, low, high, and the gap to the reference
    arm with its interval. What the package's choices read; never the test set."""
    out = {}
    for arm, own in cells.items():
        m = contrast([own], [1.0])
        out[arm] = {"mean": m.value, "low": m.low, "high": m.high, "seeds": own.seeds}
        if arm != reference_arm:
            g = gap(own, cells[reference_arm])
            out[arm] |= {"gap": g.value, "gap_low": g.low, "gap_high": g.high, "gap_se": g.se, "gap_df": g.df}
    return out


def claims(summary: pd.DataFrame, reference_arm: str, accuracy: dict[str, dict],
           resampling_arms: frozenset[str] = frozenset(), mode: str = "verl's full pass") -> dict[str, dict]:
    """Each arm against the reference arm (16-GRPO): the paper's three claims, measured, with their uncertainty.

    The accuracy entries of `accuracy[arm]` (accuracy_claims: gap and share with their intervals); each seed's gap
    (seeds paired by position); rollout_ratio and time_ratio: the arm's mean over seeds divided by the reference's,
    and per seed; time_ratio_cpu: the same on CPU seconds; time_mode: the work those times measured (`time_mode`);
    timed_under_contention: the arm's and the reference's runs whose threads waited for a CPU more than
    CONTENDED_WAIT_SHARE of their training time, with that share (null: the wait is not measured on this system).
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
            **accuracy[arm],
            "accuracy_gap_per_seed": [float(x) for x in a[:n] - r[:n]],
            "rollout_ratio": float(runs["rollouts"].mean() / ref["rollouts"].mean()),
            "time_ratio": float(runs["train_time"].mean() / ref["train_time"].mean()),
            "time_ratio_per_seed": [float(x) for x in
                                    runs["train_time"].to_numpy()[:n] / ref["train_time"].to_numpy()[:n]],
            "time_ratio_cpu": float(runs["train_cpu_time"].mean() / ref["train_cpu_time"].mean()),
            "time_mode": mode,
            "timed_under_contention": contended(pd.concat([runs, ref])),
        }
    return out


def contended(runs: pd.DataFrame) -> dict[str, float] | None:
    """The runs timed under contention (CONTENDED_WAIT_SHARE), each with the share of its training time its threads
    waited for a CPU; None where the wait was not measured (not Linux)."""
    if runs["cpu_wait_share"].isna().any():
        return None
    busy = runs[runs["cpu_wait_share"] > CONTENDED_WAIT_SHARE]
    return {row.model: round(float(row.cpu_wait_share), 3) for row in busy.itertuples()}


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
