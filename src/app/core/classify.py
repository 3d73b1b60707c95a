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
import pandas as pd

from src.app.config import Config
from src.app.core.keys import VISIBLE_KEY

METHODS = ("knn", "logreg")  # cross-validated on all labelled cells, and written as predictions
TRANSFER_METHODS = (*METHODS, "label_propagation")  # label-efficiency curve
# label spreading (Zhou et al. 2004): F <- alpha * S F + (1 - alpha) * Y until it settles
PROPAGATION_ALPHA = 0.9
PROPAGATION_MAX_ITER = 200
PROPAGATION_TOL = 1e-6


def label_codes(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class codes per cell (-1 where the label is NaN) and the class names, sorted as strings
    (the order the classifier head, metrics.json and the figures all use)."""
    values = labels.astype("object").to_numpy()
    known = pd.notna(values)
    classes = sorted({str(v) for v in values[known]})
    lookup = {c: i for i, c in enumerate(classes)}
    codes = np.array([lookup[str(v)] if k else -1 for v, k in zip(values, known, strict=True)])
    return codes.astype(int), classes


def draw_visible(codes: np.ndarray, *, fraction: float, seed: int) -> np.ndarray:
    """A seeded, stratified ``fraction`` of the labelled cells (codes >= 0): ``round(fraction *
    n)`` of each class, at least one, so every class has a labelled cell. Also the classifier
    head's draw (``data_adapter.label_codes``)."""
    rng = np.random.default_rng(seed)
    visible = np.zeros(len(codes), dtype=bool)
    for cls in np.unique(codes[codes >= 0]):
        members = np.flatnonzero(codes == cls)
        n_keep = max(1, round(fraction * len(members)))
        visible[rng.choice(members, size=n_keep, replace=False)] = True
    return visible


def visible_cells(obs: pd.DataFrame, cfg: Config) -> np.ndarray:
    """The cells whose label counts as known: those shown to the classifier head (``.obs
    ["label_visible"]`` from the embed stage), else the head's draw (``annotation.label_fraction``
    of ``annotation.label_key``, or of the first ``eval.label_keys`` column)."""
    if VISIBLE_KEY in obs.columns:
        return obs[VISIBLE_KEY].to_numpy(dtype=bool)
    key = cfg.annotation.label_key
    key = key if key in obs.columns else cfg.eval.label_keys[0]
    codes, _ = label_codes(obs[key])
    return draw_visible(codes, fraction=cfg.annotation.label_fraction, seed=cfg.seed)


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


def knn_graph(rep: np.ndarray, *, n_neighbors: int) -> Any:
    """Symmetric, degree-normalised kNN graph ``D^-1/2 W D^-1/2`` (sparse, cells x cells) with
    ``W`` the union of each cell's ``n_neighbors`` nearest neighbours (self excluded).
    O(n k log n) with a tree index; O(n k) memory."""
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = len(rep)
    k = max(1, min(n_neighbors, n - 1))
    idx = NearestNeighbors(n_neighbors=k).fit(rep).kneighbors(return_distance=False)
    adj = sp.csr_matrix((np.ones(idx.size), idx.ravel(), np.arange(0, idx.size + 1, k)), (n, n))
    adj = adj.maximum(adj.T).tocsr()
    inv_sqrt = 1.0 / np.sqrt(np.asarray(adj.sum(axis=1)).ravel())
    return sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)


def _spread(graph: Any, seeds: np.ndarray) -> np.ndarray:
    """Label spreading of the one-hot ``seeds`` (cells, classes) over ``graph``: unnormalised
    class mass per cell, 0 where the graph connects a cell to no seed.
    O(iterations * edges * n_classes), iterations <= PROPAGATION_MAX_ITER."""
    spread = seeds.copy()
    for _ in range(PROPAGATION_MAX_ITER):
        nxt = PROPAGATION_ALPHA * (graph @ spread) + (1 - PROPAGATION_ALPHA) * seeds
        done = np.abs(nxt - spread).max() <= PROPAGATION_TOL * max(nxt.max(), 1e-12)
        spread = nxt
        if done:
            break
    return spread


def _seeds(codes: np.ndarray, train: np.ndarray, n_classes: int) -> np.ndarray:
    seeds = np.zeros((len(codes), n_classes))
    seeds[np.flatnonzero(train), codes[train]] = 1.0
    return seeds


def _normalised(spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities from the spread class mass, and which cells any seed reached (the
    others keep all-zero rows)."""
    mass = spread.sum(axis=1)
    reached = mass > 0
    return spread / np.where(reached, mass, 1.0)[:, None], reached


def label_propagation(
    graph: Any, codes: np.ndarray, train: np.ndarray, n_classes: int
) -> tuple[np.ndarray, int]:
    """Label spreading of the ``train`` cells' labels over ``graph`` (from :func:`knn_graph`).

    Returns class probabilities for every cell and the number of cells the graph does not
    connect to any training cell; those get the training cells' class frequencies.
    """
    seeds = _seeds(codes, train, n_classes)
    proba, reached = _normalised(_spread(graph, seeds))
    unreached = ~reached
    proba[unreached] = seeds[train].mean(axis=0)
    return proba, int(unreached.sum())


def pseudo_labels(
    rep: np.ndarray, codes: np.ndarray, n_classes: int, *, n_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels for the cells without a label (codes -1) by label spreading of the labelled
    cells over the ``n_neighbors`` kNN graph of ``rep`` (Iscen et al. 2019), and a certainty
    weight per cell: 1 - entropy / log(n_classes) of the spread class distribution, 0 for the
    labelled cells (they keep their own label) and for cells no labelled cell reaches.
    O(n k log n) for the graph, then as :func:`_spread`."""
    known = codes >= 0
    seeds = _seeds(codes, known, n_classes)
    proba, reached = _normalised(_spread(knn_graph(rep, n_neighbors=n_neighbors), seeds))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(proba > 0, proba * np.log(proba), 0.0).sum(axis=1)
    weights = 1.0 - entropy / np.log(max(n_classes, 2))
    weights = np.where(reached & ~known, np.clip(weights, 0.0, 1.0), 0.0)
    return proba.argmax(axis=1), weights


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
) -> tuple[np.ndarray, int]:
    """Class probabilities for every cell from ``method`` trained on the ``train`` cells' codes,
    and the cells label propagation could not reach (0 for the other methods). ``graph`` is the
    :func:`knn_graph` of ``rep``, built here when label propagation needs it and none is given.
    """
    if method == "label_propagation":
        graph = graph if graph is not None else knn_graph(rep, n_neighbors=n_neighbors)
        return label_propagation(graph, codes, train, n_classes)
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; expected one of {TRANSFER_METHODS}")
    proba = fit_predict(
        rep[train],
        codes[train],
        rep,
        n_classes,
        method=method,
        n_neighbors=n_neighbors,
        seed=seed,
    )
    return proba, 0


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
