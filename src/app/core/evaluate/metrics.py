"""Scores of an annotation and of a representation: classification metrics from class
probabilities, and latent quality (silhouette of the labels, agreement of clusters with them).

Class-averaged scores (macro F1, weighted F1, balanced accuracy, AUROC) run over the classes
present in the true labels; a class that is never predicted has precision, recall and F1 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# silhouette is O(n^2) in the cells; above this many it is estimated on a seeded sample
SILHOUETTE_MAX_CELLS = 5000


def auroc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """One-vs-rest macro AUROC over the classes present in ``y`` (probabilities renormalised
    over them); binary labels score the positive class directly; None for fewer than 2 classes."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return None
    sub = proba[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    y_sub = np.searchsorted(present, y)
    if len(present) == 2:
        return float(roc_auc_score(y_sub, sub[:, 1]))
    return float(
        roc_auc_score(
            y_sub, sub, multi_class="ovr", average="macro", labels=np.arange(len(present))
        )
    )


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in ``y`` (codes >= 0); the same as scikit-learn's
    ``f1_score(average="macro", labels=present, zero_division=0)`` in O(cells) per class."""
    present = np.unique(y)
    size = int(max(y.max(), pred.max())) + 1
    tp = np.bincount(y[pred == y], minlength=size)[present]
    true = np.bincount(y, minlength=size)[present]
    predicted = np.bincount(pred, minlength=size)[present]
    return float(np.mean(2 * tp / (true + predicted)))


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Scores of the predictions ``proba.argmax(1)`` against the class codes ``y``.

    ``proba`` is (cells, len(classes)). Returns ``n_cells``, ``accuracy``, ``balanced_accuracy``
    (mean recall), ``f1_macro``, ``f1_weighted`` (by support), ``auroc`` (see :func:`auroc`),
    ``per_class`` (precision, recall, F1 and support of every class) and ``confusion_matrix``
    (rows true, columns predicted, with the class names).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.arange(len(classes))
    pred = proba.argmax(axis=1)
    present = np.unique(y)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    return {
        "n_cells": len(y),
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
        "f1_weighted": float(np.average(f1[present], weights=support[present])),
        "auroc": auroc(y, proba),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": {
            "classes": classes,
            "counts": confusion_matrix(y, pred, labels=labels).tolist(),
        },
    }


def latent_quality(rep: np.ndarray, codes: np.ndarray, *, seed: int) -> dict[str, Any]:
    """How well ``rep`` separates the labels ``codes`` (-1: unlabelled, left out).

    ``silhouette``: mean silhouette width of the labels in [-1, 1] (Euclidean; on a seeded sample
    of SILHOUETTE_MAX_CELLS cells above that); ``ari`` / ``nmi``: adjusted Rand index and
    normalised mutual information of k-means clusters (k = number of classes, seeded) of all
    cells against the labels. Leiden would need igraph, not a dependency here.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import (
        adjusted_rand_score,
        normalized_mutual_info_score,
        silhouette_score,
    )

    known = codes >= 0
    y = codes[known]
    n_classes = len(np.unique(y))
    out: dict[str, Any] = {"clustering": "kmeans", "n_clusters": n_classes}
    if n_classes < 2 or n_classes >= known.sum():
        return {**out, "silhouette": None, "ari": None, "nmi": None}
    sample = SILHOUETTE_MAX_CELLS if known.sum() > SILHOUETTE_MAX_CELLS else None
    clusters = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(rep)
    return {
        **out,
        "silhouette": float(silhouette_score(rep[known], y, sample_size=sample, random_state=seed)),
        "ari": float(adjusted_rand_score(y, clusters[known])),
        "nmi": float(normalized_mutual_info_score(y, clusters[known])),
    }
