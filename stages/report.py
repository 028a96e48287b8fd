"""report: execute notebooks/report.ipynb with papermill and convert it to a self-contained HTML page.

Reads: notebooks/report.ipynb, results/, metrics/claims.json, metrics/base.json, data/paper/tables.csv,
params `train`, `evaluate`, `report`. Writes: reports/report.ipynb (executed), reports/report.html (code hidden,
figures embedded as PNG, no network needed to view).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from twogrpo.io import atomic_path
from twogrpo.run import start_stage

NOTEBOOK = Path("notebooks/report.ipynb")
OUT = Path("reports")


def main() -> None:
    start_stage("report")
    with atomic_path(OUT / "report.ipynb") as executed:
        papermill.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", cwd=".", progress_bar=False)
        html, _ = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(nbformat.read(executed, as_version=4))
        with atomic_path(OUT / "report.html") as page:
            page.write_text(html)


if __name__ == "__main__":
    main()
