"""report: execute notebooks/report.ipynb with papermill and convert it to a self-contained HTML page.

Reads: notebooks/report.ipynb, results/, metrics/claims.json, metrics/base.json, data/paper/tables.csv,
params `train`, `evaluate`, `report`. Writes: reports/report.ipynb (executed), reports/report.html (code hidden,
figures embedded as PNG, no network needed to view), reports/figures/*.png (the same figures, for `dvc plots`).
"""

from __future__ import annotations

from pathlib import Path

from twogrpo.notebooks import execute_to_html
from twogrpo.run import start_stage

OUT = Path("reports")


def main() -> None:
    start_stage("report")
    execute_to_html(Path("notebooks/report.ipynb"), OUT / "report.ipynb", OUT / "report.html",
                    {"figures_dir": str(OUT / "figures")})


if __name__ == "__main__":
    main()
