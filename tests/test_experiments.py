"""The experiments comparison on `dvc exp show --json`-shaped input (the smoke study runs it on real DVC output)."""

import pytest

from tools.experiments import changed_params, claims_by_experiment, experiment_rows, flatten


def entry(rev, name, clip_high, error=None):
    params = {"train": {"clip_high": clip_high, "seeds": [0, 1, 2]},
              "report": {"equivalence_margin": 0.02, "share_margin": 0.8}}
    return {"rev": rev, "name": name, "error": error,
            "data": {"params": {"params.yaml": {"data": params}}, "metrics": {}}}


SHOWN = [
    {**entry("workspace", None, 0.28), "experiments": None},
    {**entry("a" * 40, "main", 0.28), "experiments": [
        {"revs": [entry("b" * 40, "clip-0.2", 0.2)]},
        {"revs": [entry("c" * 40, "broken", 0.1, error={"msg": "stage train failed"})]},
    ]},
]
CLAIMS = {"reference_arm": "g16", "arms": {"g2": {
    "accuracy_gap": -0.01, "accuracy_gap_low": -0.015, "accuracy_gap_high": -0.005, "rollout_ratio": 0.125,
    "time_ratio": 0.2, "time_ratio_per_seed": [0.19, 0.21], "accuracy_gap_per_seed": [-0.01], "resample": False,
    "share": 0.95, "share_low": 0.85, "share_high": 1.05, "share_lower_bound": 0.87, "seeds": 3,
    "reference_gain": 0.06, "reference_gain_low": 0.04, "reference_gain_high": 0.08}}}


def read_claims(rev):
    return CLAIMS if rev in ("workspace", "b" * 40) else None


def test_flatten_dots_nested_keys_and_keeps_lists_comparable():
    assert flatten({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": 1, "a.c": "[1, 2]"}


def test_rows_cover_workspace_commits_and_experiments():
    rows = experiment_rows(SHOWN, read_claims)
    assert [(r["experiment"], r["kind"], r["baseline"]) for r in rows] == [
        ("workspace", "workspace", "workspace"), ("main", "commit", "aaaaaaa"), ("clip-0.2", "experiment", "aaaaaaa"),
        ("broken", "experiment", "aaaaaaa")]
    assert list(changed_params(rows).columns) == ["train.clip_high"]  # seeds and margin are the same everywhere


def test_claims_per_experiment_with_verdicts_and_reasons_when_missing():
    table = claims_by_experiment(experiment_rows(SHOWN, read_claims)).set_index("experiment")
    assert table.loc["clip-0.2", "accuracy verdict"] == "reproduced: keeps at least 80% of the gain"
    assert table.loc["clip-0.2", "verdict in points"] == "reproduced: equivalent within the margin"
    assert table.loc["clip-0.2", "gap"] == pytest.approx(-1.0) and table.loc["clip-0.2", "time verdict"] == "reproduced"
    assert table.loc["broken", "note"] == "stage train failed"
    assert table.loc["main", "note"] == "no metrics/claims.json (not run)"
