import subprocess
import sys

import numpy as np
import pandas as pd

from src.app.core.viz import (
    category_colours,
    plot_confusion,
    plot_embedding,
    plot_label_efficiency,
    plot_training_curves,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_embedding_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    labels = pd.Series(rng.choice(["a", "b", None], size=50))
    predicted = pd.Series(rng.choice(["a", "b"], size=50))
    out = tmp_path / "figures" / "umap.png"
    plot_embedding(
        coords, {"true": labels, "predicted": predicted, "x": labels}, out, dpi=30, ncols=2
    )
    assert out.read_bytes()[:8] == PNG
    assert [p.name for p in out.parent.iterdir()] == ["umap.png"]


def test_confusion_label_efficiency_and_training_curves(tmp_path):
    plot_confusion(
        {"k: kNN": (["a", "b", "c"], [[3, 1, 0], [0, 2, 0], [0, 0, 0]])}, tmp_path / "c.png", dpi=30
    )

    def point(mean, sd=None):
        return {"f1_macro": mean, "f1_macro_sd": sd, "n_repeats": 2, "values": []}

    curves = {
        "fractions": {},
        "knn": {"0.1": point(0.5, 0.1), "0.5": point(0.8, 0.05)},
        "label_propagation": {"0.1": point(None), "0.5": point(0.9)},
    }
    metrics = {
        "protocol": {"label_fractions": [0.1, 0.5], "n_repeats": 2},
        "label_efficiency": {"k": {**curves, "joint": {"0.1": point(0.7)}}},
        "baseline": {"label_efficiency": {"k": curves}},
    }
    plot_label_efficiency(metrics, tmp_path / "le.png", dpi=30, label_keys=["k", "absent"])
    history = [
        {"epoch": e, "train_loss": 10 / e, "val_loss": 11 / e, "reconstruction": 9 / e, "kl": e}
        for e in (1, 2, 3)
    ]
    plot_training_curves(history, tmp_path / "t.png", dpi=30)
    for name in ("c.png", "le.png", "t.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_colours_are_stable_per_category():
    assert category_colours(["b", "a"]) == category_colours(["a", "b"])
    assert len(set(category_colours(list("abcdefghijkl")).values())) == 12


def test_plot_only_draws_and_evaluation_needs_no_torch():
    """The plot layer imports nothing that fits (no torch, scikit-learn or umap); evaluation and
    the stages module import no torch."""
    code = (
        "import sys, src.app.core.viz, src.app.core.plot.run; "
        "fitting = {'torch', 'sklearn', 'umap', 'scipy.sparse.linalg'} & set(sys.modules); "
        "assert not fitting, fitting; "
        "import src.app.core.eval, src.app.core.evaluate.annotate, src.app.stages; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
