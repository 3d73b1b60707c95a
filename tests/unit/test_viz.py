import subprocess
import sys

import numpy as np
import pandas as pd

from src.app.core.viz import category_colours, plot_embedding


def test_plot_embedding_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    labels = pd.Series(rng.choice(["a", "b", None], size=50))
    out = tmp_path / "figures" / "umap.png"
    plot_embedding(coords, {"cell type": labels}, out, dpi=40)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["umap.png"]


def test_colours_are_stable_per_category():
    assert category_colours(["b", "a"]) == category_colours(["a", "b"])
    assert len(set(category_colours(list("abcdefghijkl")).values())) == 12


def test_viz_does_not_import_torch():
    code = "import sys, src.app.core.viz, src.app.stages; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
