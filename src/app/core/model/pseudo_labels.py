"""Pseudo-labels for the classifier head: label spreading of the visible labels over the latent's
kNN graph, each weighted by its certainty (Iscen et al. 2019)."""

from __future__ import annotations

import numpy as np

from src.app.core.data.graph import knn_graph, normalised, seeds_of, spread


def pseudo_labels(
    rep: np.ndarray, codes: np.ndarray, n_classes: int, *, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels for the cells without a label (codes -1) by label spreading of the labelled
    cells over the ``n_neighbors`` kNN graph of ``rep`` (Iscen et al. 2019), and a certainty
    weight per cell: 1 - entropy / log(n_classes) of the spread class distribution, 0 for the
    labelled cells (they keep their own label) and for cells no labelled cell reaches.
    O(n k log n) for the graph, then as :func:`spread`."""
    known = codes >= 0
    seeds = seeds_of(codes, known, n_classes)
    proba, reached = normalised(spread(knn_graph(rep, n_neighbors=n_neighbors), seeds))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(proba > 0, proba * np.log(proba), 0.0).sum(axis=1)
    weights = 1.0 - entropy / np.log(max(n_classes, 2))
    weights = np.where(reached & ~known, np.clip(weights, 0.0, 1.0), 0.0)
    return proba.argmax(axis=1), weights
