"""Run a report notebook with papermill and convert it to one self-contained HTML page (code hidden, figures
embedded as PNG, nothing fetched when it is opened)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from twogrpo.io import atomic_path

# A table wider than the page scrolls inside its own box instead of spilling past the page's edge.
WIDE_TABLES_SCROLL = ("<style>.jp-RenderedHTMLCommon table { display: block; max-width: 100%; overflow-x: auto; }"
                      "</style>\n")


def execute_to_html(notebook: Path, executed: Path, html: Path, parameters: dict | None = None) -> None:
    """Execute `notebook` (papermill injects `parameters`) into `executed`, then write `html`; each atomically."""
    with atomic_path(executed) as tmp:
        papermill.execute_notebook(str(notebook), str(tmp), parameters=parameters or {}, kernel_name="python3",
                                   cwd=".", progress_bar=False)
        page, _ = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(nbformat.read(tmp, as_version=4))
        with atomic_path(html) as out:
            out.write_text(page.replace("</head>", WIDE_TABLES_SCROLL + "</head>", 1))
