"""Every figure of a run from what the evaluate and train stages wrote: reads and draws, computes
nothing (no torch, no fitting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.app.core.data.keys import LABEL_KEY_KEY, UMAP_KEY, VISIBLE_KEY, predicted_key
from src.app.core.plot.figures import (
    plot_confusion,
    plot_embedding,
    plot_label_efficiency,
    plot_training_curves,
)


def umap_panels(
    adata: Any, label_keys: list[str], batch_key: str | None = None
) -> dict[str, pd.Series]:
    """The UMAP figure's panels: for each label key, the true labels and the prediction shown
    beside them (the classifier head's where it predicts that key, else kNN's); then the batch
    of each cell (titled :func:`batch_title`) where ``batch_key`` is a column of ``.obs``."""
    obs = adata.obs
    n_visible = int(obs[VISIBLE_KEY].sum()) if VISIBLE_KEY in obs else None
    source = f"from {n_visible} labelled cells" if n_visible is not None else ""
    panels: dict[str, pd.Series] = {}
    for key in label_keys:
        panels[f"{key}: true"] = obs[key]
        if adata.uns.get(LABEL_KEY_KEY) == key and predicted_key(key) in obs:
            panels[f"{key}: predicted, joint head {source}"] = obs[predicted_key(key)]
        elif predicted_key(key, "knn") in obs:
            panels[f"{key}: predicted, kNN {source}"] = obs[predicted_key(key, "knn")]
    if batch_key is not None and batch_key in obs.columns:
        panels[batch_title(batch_key)] = obs[batch_key]
    return panels


def batch_title(batch_key: str) -> str:
    return f"batch ({batch_key})"


def confusion_panels(metrics: dict[str, Any], label_keys: list[str]) -> dict[str, Any]:
    """The confusion figure's panels: cross-validated kNN for each label key, and the classifier
    head on the cells it did not see."""
    n_folds = metrics.get("protocol", {}).get("n_folds")
    panels = {}
    for key in label_keys:
        entry = metrics["labels"][key]
        matrix = entry["knn"]["confusion_matrix"]
        panels[f"{key}: kNN, {n_folds}-fold CV"] = (matrix["classes"], matrix["counts"])
        if "joint" in entry:
            matrix = entry["joint"]["confusion_matrix"]
            title = f"{key}: joint head, {entry['joint']['n_evaluated']} unseen cells"
            panels[title] = (matrix["classes"], matrix["counts"])
    return panels


def plot_run(
    adata: Any,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    figures: dict[str, Path],
    *,
    dpi: int,
) -> None:
    """Every figure of a run from annotated.h5ad (``adata``: its ``.obs``, ``.obsm["X_umap"]``,
    ``.uns``), metrics.json (whose ``protocol.label_keys`` names the panels, and whose
    ``batch.batch_key``, where there is one, adds a UMAP panel by batch) and the training
    history; ``figures``: name -> output path for ``umap``, ``confusion``, ``label_efficiency``
    and ``training_curves``."""
    plot_umap(adata, metrics, figures["umap"], dpi=dpi)
    plot_results(metrics, history, figures, dpi=dpi)


def plot_umap(adata: Any, metrics: dict[str, Any], out: str | Path, *, dpi: int) -> None:
    """The UMAP figure: the panels of :func:`umap_panels` on annotated.h5ad's UMAP."""
    label_keys = list(metrics["protocol"]["label_keys"])
    batch_key = metrics.get("batch", {}).get("batch_key")
    coords = np.asarray(adata.obsm[UMAP_KEY])
    panels = umap_panels(adata, label_keys, batch_key)
    new_row = (batch_title(batch_key),) if batch_key is not None else ()
    plot_embedding(coords, panels, out, dpi=dpi, ncols=2, new_row=new_row)


def plot_results(
    metrics: dict[str, Any], history: list[dict[str, Any]], figures: dict[str, Path], *, dpi: int
) -> None:
    """The figures of metrics.json and the training history alone: ``confusion``,
    ``label_efficiency`` and ``training_curves`` of ``figures`` (name -> output path)."""
    label_keys = list(metrics["protocol"]["label_keys"])
    plot_confusion(confusion_panels(metrics, label_keys), figures["confusion"], dpi=dpi)
    plot_label_efficiency(metrics, figures["label_efficiency"], dpi=dpi, label_keys=label_keys)
    plot_training_curves(history, figures["training_curves"], dpi=dpi)


def plot_mapping(figure: dict[str, Any], out: str | Path, *, dpi: int) -> None:
    """The map stage's UMAP of reference and query together: one panel by source, one by
    label (the reference's labels, the query's predictions)."""
    key = figure["key"]
    panels = {
        "source": pd.Series(figure["source"]),
        f"{key}: reference labels, query predictions": pd.Series(figure["label"]),
    }
    second = (list(panels)[1],)  # its own row: the two panels do not share a legend
    plot_embedding(np.asarray(figure["coords"]), panels, out, dpi=dpi, ncols=1, new_row=second)
