"""Public face of the figures (SPEC: UMAP figures); the code lives in ``core/plot/``:
``figures`` (one function per figure) and ``run`` (every figure of a run)."""

from src.app.core.data.colours import category_colours
from src.app.core.plot.figures import (
    plot_confusion,
    plot_embedding,
    plot_label_efficiency,
    plot_training_curves,
)
from src.app.core.plot.run import confusion_panels, plot_run, umap_panels

__all__ = [
    "category_colours",
    "confusion_panels",
    "plot_confusion",
    "plot_embedding",
    "plot_label_efficiency",
    "plot_run",
    "plot_training_curves",
    "umap_panels",
]
