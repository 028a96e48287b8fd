"""The ladder's figures, from reports/ladder.json (written by `python -m tools.ladder`, see docs/ladder.md): each
point's cost and base, the gap of every 2-GRPO arm to 16-GRPO and its share of 16-GRPO's gain with their 95%
intervals, whether 16-GRPO still improves at the point, the verdict per axis, and the default point the written rule
chooses on validation.

    python bench/ladder.py             # print them
    python bench/ladder.py --record    # also into docs/figures.md, block `ladder`

It measures nothing itself: the ladder's experiments did (the lines name their commits).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from figures import add_record_flag, recording

from twogrpo.ladder import (
    CANDIDATES,
    REFERENCE_ARM,
    default_choice,
    gap_rows,
    gap_text,
    progress_table,
    rate_choice,
    verdict_table,
)
from twogrpo.paper import share_text

LADDER = Path(__file__).resolve().parents[1] / "reports" / "ladder.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_record_flag(parser, "ladder")
    args = parser.parse_args()
    ladder = json.loads(LADDER.read_text())
    rows = gap_rows(ladder)
    with recording(args.record):
        total = sum(ladder["seconds"].values()) / 60
        commits = sorted({record["baseline"][:7] for record in ladder["points"].values()})
        print(f"# `python -m tools.ladder` on this machine, 2 cores; points run on commit {', '.join(commits)}. "
              f"Minutes: each point's last run, without the stages it restored from DVC's run cache ({total:.0f} in "
              "all). Mean@8 on the 500 test problems; gap to 16-GRPO in points, with its 95% interval where the record "
              "holds the study's seed-aware one (twogrpo/stats.py). Verdicts: the slope through the points with 3+ "
              "seeds.")
        improving = progress_table(ladder, rows, list(dict.fromkeys(rows["point"]))).set_index("point")
        print("| point | parameters | seeds | base val acc | minutes | 16-GRPO Mean@8 | 16-GRPO still improving | "
              "arm (lr factor) | Mean@8 | gap [95%] | share of the gain [95%] | discard rate |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for _, r in rows.iterrows():
            record = ladder["points"][r["point"]]
            claims = record["claims"]["arms"][r["arm"]]
            seconds = ladder["seconds"].get(r["point"])
            print(f"| `{r['point']}` | {r['parameters']:,} | {r['seeds']} | {record['base']['val_accuracy']:.2f} | "
                  f"{'-' if seconds is None else f'{seconds / 60:.1f}'} | {r['reference_mean_at_k']:.2f} | "
                  f"{'yes' if improving.loc[r['point'], 'still improving'] else 'no'} | "
                  f"`{r['arm']}` (x{r['lr_factor']:.2f}) | {r['mean_at_k']:.2f} | "
                  f"{gap_text(r['gap'], r['low'], r['high'])} | {share_text(claims)} | "
                  f"{r['discard_rate']:.0%} ({REFERENCE_ARM} {r['reference_discard_rate']:.0%}) |")
        print("| axis | arm | verdict (gap) | verdict (share of the gain) | gap along the axis |")
        print("|---|---|---|---|---|")
        for _, v in verdict_table(rows, ladder["axes"]).iterrows():
            arm = v["arm"] if v["arm"].startswith("2-GRPO at ") else f"`{v['arm']}`"
            print(f"| {v['axis']} | {arm} | {v['verdict']} | {v['verdict on the share']} | {v['gap along the axis']} |")
        grid, rates = rate_choice(rows, ladder.get("grid", []))
        if len(grid):
            by_rate = "; ".join(
                f"{arm}: " + ", ".join(f"{r['lr']:.3g} {r['validation']:.2f}" for _, r in runs.iterrows())
                for arm, runs in grid.drop_duplicates(["arm", "lr"]).groupby("arm"))
            print(f"Validation Mean@k by learning rate on the grid ({by_rate}). The rates by the rule: "
                  + (", ".join(f"{arm} {lr:.3g}" for arm, lr in rates.items()) if rates else "no choice yet") + ".")
        table, chosen = default_choice(ladder, rows, CANDIDATES)
        measured = table.dropna()
        print(f"The default by the rule on validation: {chosen or 'no choice (a candidate has no validation record)'}"
              + "".join(f"; `{r['point']}`: 16-GRPO {r['16-GRPO validation Mean@k']:.2f} on validation"
                        for _, r in measured.iterrows()) + ".")


if __name__ == "__main__":
    main()
