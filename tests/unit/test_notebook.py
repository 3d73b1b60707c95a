"""The tutorial notebook's shape (it is executed by .ci/run, outside the 30 s suite)."""

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "tutorial.ipynb"


def test_tutorial_is_small_clean_cells_over_the_cli_workflow_and_results():
    nb = json.loads(NOTEBOOK.read_text())
    code = ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert all(not cell.get("outputs") for cell in nb["cells"] if cell["cell_type"] == "code")
    assert max(len(src.splitlines()) for src in code) <= 16
    text = "\n".join(code)
    for needle in ("src.app.cli", "snakemake", "metrics.json", "annotated.h5ad", "sc.pl.umap"):
        assert needle in text, needle
    markdown = [cell for cell in nb["cells"] if cell["cell_type"] == "markdown"]
    assert max(len("".join(cell["source"])) for cell in markdown) < 400
