"""Annotation metrics on a latent space: kNN and logistic regression with stratified k-fold CV.

Pure NumPy / scikit-learn; never trains the VAE and never imports torch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from src.app.config import EvalConfig
from src.app.errors import DataError

METHODS = ("knn", "logreg")


def make_classifier(method: str, *, n_neighbors: int, n_train: int, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "knn":
        return KNeighborsClassifier(n_neighbors=min(n_neighbors, n_train))
    if method == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    raise ValueError(f"unknown method '{method}'; expected one of {METHODS}")


def out_of_fold_proba(
    latent: np.ndarray, y: np.ndarray, n_classes: int, *, method: str, cfg: EvalConfig, seed: int
) -> np.ndarray:
    """Class probabilities (cells, n_classes) for every cell from the fold that held it out.

    ``y`` holds class codes 0..n_classes-1. A fold whose training part lacks a class gives that
    class probability 0.
    """
    from sklearn.model_selection import StratifiedKFold

    n_splits = min(cfg.n_folds, int(np.bincount(y).max()))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    proba = np.zeros((len(y), n_classes))
    with warnings.catch_warnings():
        # rare classes (fewer members than folds) are expected; the metrics report supports
        warnings.filterwarnings("ignore", message="The least populated class")
        for train_idx, test_idx in folds.split(latent, y):
            clf = make_classifier(
                method, n_neighbors=cfg.n_neighbors, n_train=len(train_idx), seed=seed
            )
            clf.fit(latent[train_idx], y[train_idx])
            proba[np.ix_(test_idx, clf.classes_)] = clf.predict_proba(latent[test_idx])
    return proba


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1, one-vs-rest macro AUROC, per-class F1 and the confusion matrix.

    ``y`` holds class codes; ``proba`` is (cells, len(classes)). AUROC is None when fewer than two
    classes are present.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    labels = np.arange(len(classes))
    pred = proba.argmax(axis=1)
    present = np.unique(y)
    if len(present) < 2:
        auroc = None
    elif len(classes) == 2:
        auroc = float(roc_auc_score(y, proba[:, 1]))
    else:
        # one-vs-rest over the classes present; rows renormalised over them
        sub = proba[:, present]
        sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
        y_sub = np.searchsorted(present, y)
        auroc = float(
            roc_auc_score(
                y_sub, sub, multi_class="ovr", average="macro", labels=np.arange(len(present))
            )
            if len(present) > 2
            else roc_auc_score(y_sub, sub[:, 1])
        )
    per_class = f1_score(y, pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "auroc": auroc,
        "per_class_f1": {c: float(f) for c, f in zip(classes, per_class, strict=True)},
        "confusion_matrix": {
            "classes": classes,
            "counts": confusion_matrix(y, pred, labels=labels).tolist(),
        },
    }


def evaluate_joint(
    labels: pd.Series, proba: np.ndarray, categories: list[str], *, visible: np.ndarray
) -> dict[str, Any]:
    """Metrics of the jointly trained classifier head on the labelled cells whose label it never
    saw (``~visible``); ``proba`` (cells, len(categories)) are its class probabilities."""
    values = labels.astype("object").to_numpy()
    held_out = pd.notna(values) & ~np.asarray(visible, dtype=bool)
    lookup = {c: i for i, c in enumerate(categories)}
    unknown = sorted({str(v) for v in values[held_out]} - set(lookup))
    if unknown:
        raise DataError(f"labels {unknown} are not among the classifier's classes {categories}")
    y = np.array([lookup[str(v)] for v in values[held_out]], dtype=int)
    result = classification_metrics(y, proba[held_out], categories)
    return {"n_visible": int(np.sum(visible)), "n_evaluated": int(held_out.sum()), **result}


def evaluate_latent(
    latent: np.ndarray, obs: pd.DataFrame, cfg: EvalConfig, *, seed: int
) -> dict[str, Any]:
    """Metrics for each label key in ``cfg.label_keys`` and method in :data:`METHODS`.

    Unlabelled cells (NaN) are left out. The top-level ``accuracy`` and ``f1_macro`` are kNN on
    the first label key.
    """
    if latent.shape[0] != len(obs):
        raise DataError(f"latent has {latent.shape[0]} rows but the data has {len(obs)} cells")
    results: dict[str, Any] = {}
    for key in cfg.label_keys:
        if key not in obs.columns:
            raise DataError(
                f"label column '{key}' (eval.label_keys) is not in the data's .obs; "
                f"available: {sorted(map(str, obs.columns))}"
            )
        labels = obs[key]
        mask = labels.notna().to_numpy()
        if mask.sum() < 2:
            raise DataError(f"label column '{key}' has {int(mask.sum())} labelled cells; need >= 2")
        codes, uniques = pd.factorize(labels[mask], sort=True)
        classes = [str(c) for c in uniques]
        if len(classes) < 2:
            raise DataError(f"label column '{key}' has a single class ({classes[0]}); need >= 2")
        entry: dict[str, Any] = {
            "n_labelled": int(mask.sum()),
            "n_unlabelled": int((~mask).sum()),
            "support": dict(zip(classes, np.bincount(codes).tolist(), strict=True)),
        }
        for method in METHODS:
            proba = out_of_fold_proba(
                latent[mask], codes, len(classes), method=method, cfg=cfg, seed=seed
            )
            entry[method] = classification_metrics(codes, proba, classes)
        results[key] = entry
    first = results[cfg.label_keys[0]]["knn"]
    return {
        "accuracy": first["accuracy"],
        "f1_macro": first["f1_macro"],
        "protocol": {
            "n_folds": cfg.n_folds,
            "n_neighbors": cfg.n_neighbors,
            "seed": seed,
            "headline": f"knn on {cfg.label_keys[0]}",
        },
        "labels": results,
    }
