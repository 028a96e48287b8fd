"""Every DVC experiment in the workspace side by side: what each changed, and the claims with their intervals and
verdicts.

    python -m tools.experiments     # writes reports/experiments.json and reports/experiments.html

It saves `dvc exp show --json` as reports/experiments.json, then executes notebooks/experiments.ipynb on it into
reports/experiments.html (self-contained, like the study's report). Not a DVC stage: it reads every experiment of
the repository, not one run's outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from twogrpo.io import atomic_path
from twogrpo.notebooks import execute_to_html
from twogrpo.paper import verdicts

REPORTS = Path("reports")
CLAIMS = "metrics/claims.json"


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested params as dotted keys ("train.arms.g2.group_size"); lists as JSON text, so they compare."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def claims_at(rev: str) -> dict | None:
    """metrics/claims.json as committed at `rev` (an experiment's commit included: DVC commits the untracked-by-cache
    metrics), or the workspace's file; None where there is none. Read whole, since `dvc exp show` drops lists."""
    if rev == "workspace":
        path = Path(CLAIMS)
        return json.loads(path.read_text()) if path.exists() else None
    text = git_file(rev, CLAIMS)
    return json.loads(text) if text is not None else None


def git_file(rev: str, path: str) -> str | None:
    """`path` as committed at `rev` (a commit or an experiment's ref), or None where it has none."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def experiment_rows(shown: list[dict], read_claims: Callable[[str], dict | None] = claims_at) -> list[dict]:
    """One entry per row of `dvc exp show --json`: the workspace, each baseline commit, each experiment on it.
    Each has: experiment (name), rev, kind, baseline, error, params (flattened params.yaml), claims
    (metrics/claims.json at that rev, or None)."""
    rows = []
    for baseline in shown:
        kind = "workspace" if baseline["rev"] == "workspace" else "commit"
        rows.append(_row(baseline, kind, baseline["rev"], read_claims))
        for group in baseline.get("experiments") or []:
            rows += [_row(entry, "experiment", baseline["rev"], read_claims) for entry in group.get("revs") or []]
    return rows


def _row(entry: dict, kind: str, baseline: str, read_claims: Callable[[str], dict | None]) -> dict:
    data = entry.get("data") or {}
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    error = entry.get("error")
    claims = None if error else read_claims(entry["rev"])
    name = entry.get("name") or (entry["rev"] if entry["rev"] == "workspace" else entry["rev"][:7])
    return {"experiment": name, "rev": entry["rev"], "kind": kind,
            "baseline": baseline if baseline == "workspace" else baseline[:7],
            "error": error.get("msg", str(error)) if isinstance(error, dict) else error,
            "params": flatten(params), "claims": claims}


def changed_params(rows: list[dict]) -> pd.DataFrame:
    """One row per experiment, one column per parameter whose value differs between the rows."""
    params = pd.DataFrame([r["params"] for r in rows], index=[r["experiment"] for r in rows])
    varying = [c for c in params.columns if params[c].astype(str).nunique() > 1]
    return params[varying]


def claims_by_experiment(rows: list[dict]) -> pd.DataFrame:
    """One row per experiment and compared arm: the Mean@k gap to the reference arm with its 95% interval
    (points), the share of the gain with its one-sided bound, the rollout and time ratios, and the verdicts
    (twogrpo.paper.verdicts, against that experiment's own report.share_margin and report.equivalence_margin).
    Experiments without claims (failed, or not run) get one row saying why."""
    out = []
    for r in rows:
        if not r["claims"]:
            out.append({"experiment": r["experiment"], "kind": r["kind"], "arm": "-",
                        "note": r["error"] or "no metrics/claims.json (not run)"})
            continue
        margin = r["params"]["report.equivalence_margin"]
        share_margin = r["params"].get("report.share_margin")  # None in an older record: not judged
        for arm, c in r["claims"]["arms"].items():
            v = verdicts(c, margin, share_margin)
            out.append({"experiment": r["experiment"], "kind": r["kind"], "arm": arm,
                        "reference": r["claims"]["reference_arm"], "gap": 100 * c["accuracy_gap"],
                        "low": 100 * c["accuracy_gap_low"], "high": 100 * c["accuracy_gap_high"],
                        "share": c.get("share"), "share bound": c.get("share_lower_bound"),
                        "accuracy verdict": v["accuracy"], "margin": 100 * margin,
                        "verdict in points": v["accuracy_points"],
                        "rollout ratio": c["rollout_ratio"], "rollouts verdict": v["rollouts"],
                        "time ratio": c["time_ratio"], "time verdict": v["time"]})
    return pd.DataFrame(out)


def main() -> None:
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True,
                           check=True).stdout
    with atomic_path(REPORTS / "experiments.json") as tmp:
        tmp.write_text(json.dumps(json.loads(shown), indent=1))
    execute_to_html(Path("notebooks/experiments.ipynb"), REPORTS / "experiments.ipynb",
                    REPORTS / "experiments.html", {"exp_show_json": str(REPORTS / "experiments.json")})
    print(f"wrote {REPORTS / 'experiments.html'}")


if __name__ == "__main__":
    main()
