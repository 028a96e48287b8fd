"""report: execute notebooks/report.ipynb with papermill and convert it to a self-contained HTML page.

Reads: notebooks/report.ipynb, results/, metrics/claims.json, metrics/base.json, data/paper/tables.csv,
params `train`, `evaluate`, `report`. Writes: reports/report.ipynb (executed), reports/report.html (code hidden,
figures embedded as PNG, no network needed to view), reports/figures/*.png (the same figures, for `dvc plots`).
"""

from __future__ import annotations

from pathlib import Path

from twogrpo.io import atomic_paths
from twogrpo.notebooks import execute_to_html
from twogrpo.run import start_stage

OUT = Path("reports")


def main() -> None:
    start_stage("report")
    # The executed notebook, the page and the figures together, or the previous ones (a failed cell leaves them).
    with atomic_paths(OUT / "report.ipynb", OUT / "report.html", OUT / "figures") as (executed, html, figures):
        figures.mkdir()
        execute_to_html(Path("notebooks/report.ipynb"), executed, html, {"figures_dir": str(figures)})
        # The executed notebook names the figures' final folder, not the temporary one.
        executed.write_text(executed.read_text().replace(str(figures), str(OUT / "figures")))


if __name__ == "__main__":
    main()
