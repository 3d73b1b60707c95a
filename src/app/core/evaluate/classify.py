"""Cell-type classifiers on a representation (latent or PCA), fitted on the cells whose label is
known: kNN, logistic regression, and label propagation on the representation's kNN graph.

Labels are class codes ``0..n_classes-1`` per cell, ``-1`` where unknown. Every function returns
class probabilities with one column per class, so a class missing from the training cells simply
gets probability 0. Pure NumPy / SciPy / scikit-learn; never imports torch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from src.app.core.data.graph import knn_graph, normalised, seeds_of, spread

METHODS = ("knn", "logreg")  # cross-validated on all labelled cells, and written as predictions
TRANSFER_METHODS = (*METHODS, "label_propagation")  # label-efficiency curve


def make_classifier(method: str, *, n_neighbors: int, n_train: int, seed: int) -> Any:
    """kNN (k capped at the number of training cells) or standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "knn":
        return KNeighborsClassifier(n_neighbors=min(n_neighbors, n_train))
    if method == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    raise ValueError(f"unknown method '{method}'; expected one of {METHODS}")


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    *,
    method: str,
    n_neighbors: int,
    seed: int,
) -> np.ndarray:
    """Class probabilities (len(x_test), n_classes) of ``method`` fitted on ``x_train``.

    A training set with a single class predicts that class with probability 1 (scikit-learn's
    logistic regression refuses one class).
    """
    present = np.unique(y_train)
    proba = np.zeros((len(x_test), n_classes))
    if len(present) == 1:
        proba[:, present[0]] = 1.0
        return proba
    clf = make_classifier(method, n_neighbors=n_neighbors, n_train=len(y_train), seed=seed)
    clf.fit(x_train, y_train)
    proba[:, clf.classes_] = clf.predict_proba(x_test)
    return proba


def label_propagation(
    graph: Any, codes: np.ndarray, train: np.ndarray, n_classes: int
) -> tuple[np.ndarray, int]:
    """Label spreading of the ``train`` cells' labels over ``graph`` (from :func:`knn_graph`).

    Returns class probabilities for every cell and the number of cells the graph does not
    connect to any training cell; those get the training cells' class frequencies.
    """
    seeds = seeds_of(codes, train, n_classes)
    proba, reached = normalised(spread(graph, seeds))
    unreached = ~reached
    proba[unreached] = seeds[train].mean(axis=0)
    return proba, int(unreached.sum())


def transfer_proba(
    rep: np.ndarray,
    codes: np.ndarray,
    train: np.ndarray,
    n_classes: int,
    *,
    method: str,
    n_neighbors: int,
    seed: int,
    graph: Any = None,
    fits: dict | None = None,
) -> tuple[np.ndarray, int]:
    """Class probabilities for every cell from ``method`` trained on the ``train`` cells' codes,
    and the cells label propagation could not reach (0 for the other methods). ``graph`` is the
    :func:`knn_graph` of ``rep``, built here when label propagation needs it and none is given.
    ``fits`` caches results by method and training cells (for one ``rep`` and ``codes``), so
    the same draw is fitted once however many metrics use it.
    """
    key = (method, np.packbits(train).tobytes())
    if fits is not None and key in fits:
        return fits[key]
    if method == "label_propagation":
        graph = graph if graph is not None else knn_graph(rep, n_neighbors=n_neighbors)
        result = label_propagation(graph, codes, train, n_classes)
    elif method in METHODS:
        proba = fit_predict(
            rep[train], codes[train], rep, n_classes, method=method, n_neighbors=n_neighbors,
            seed=seed,
        )  # fmt: skip
        result = (proba, 0)
    else:
        raise ValueError(f"unknown method '{method}'; expected one of {TRANSFER_METHODS}")
    if fits is not None:
        fits[key] = result
    return result


def out_of_fold_proba(
    rep: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    method: str,
    n_folds: int,
    n_neighbors: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, int]]:
    """Class probabilities (cells, n_classes) for every cell from the stratified fold that held it
    out, and how the folds went: ``n_splits``, ``n_neighbors`` (k after capping at the smallest
    training part) and ``single_class_folds``.

    ``y`` holds class codes 0..n_classes-1. ``n_splits`` is ``min(n_folds, largest class)``; a
    class with fewer cells than folds is missing from the training part of some folds and gets
    probability 0 there; a training part with a single class predicts it everywhere.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    largest = int(np.bincount(y, minlength=n_classes).max())
    if largest >= 2:
        n_splits = min(n_folds, largest)
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:  # every class a single cell: nothing to stratify
        n_splits = min(n_folds, len(y))
        folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    proba = np.zeros((len(y), n_classes))
    single_class, smallest_train = 0, len(y)
    with warnings.catch_warnings():
        # rare classes (fewer members than folds) are expected and reported
        warnings.filterwarnings("ignore", message="The least populated class")
        for train_idx, test_idx in folds.split(rep, y):
            single_class += len(np.unique(y[train_idx])) == 1
            smallest_train = min(smallest_train, len(train_idx))
            proba[test_idx] = fit_predict(
                rep[train_idx],
                y[train_idx],
                rep[test_idx],
                n_classes,
                method=method,
                n_neighbors=n_neighbors,
                seed=seed,
            )
    info = {
        "n_splits": n_splits,
        "n_neighbors": min(n_neighbors, smallest_train),
        "single_class_folds": int(single_class),
    }
    return proba, info
