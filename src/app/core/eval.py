"""Annotation metrics of a representation (the VAE latent, or the PCA baseline) and the whole
metrics.json of a run (:func:`evaluate_run`).

Per label key: kNN (k=15) and logistic regression cross-validated over the labelled cells, the
same two fitted on the visible labels and scored on the hidden ones (as the classifier head is),
the label-efficiency curve (kNN, logistic regression and label propagation from a seeded fraction
of the labels), and latent quality. Pure NumPy / scikit-learn; never trains the VAE and never
imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from src.app.config import Config, EvalConfig
from src.app.core.baseline import pca_representation
from src.app.core.classify import (
    METHODS,
    TRANSFER_METHODS,
    knn_graph,
    label_codes,
    out_of_fold_proba,
    transfer_proba,
    visible_cells,
)
from src.app.core.label_efficiency import curve_point, fraction_key, label_efficiency
from src.app.core.metrics import classification_metrics, latent_quality
from src.app.errors import DataError

__all__ = [
    "METHODS",
    "TRANSFER_METHODS",
    "classification_metrics",
    "evaluate_joint",
    "evaluate_latent",
    "evaluate_representation",
    "evaluate_run",
    "summary_table",
]

# what happens to classes with few labelled cells; written to metrics.json's protocol
RARE_CLASSES = {
    "draw": "each class keeps round(fraction x its labelled cells), at least 1, so every class "
    "is in every training set; a class's cells that are drawn are not scored",
    "knn": "k is capped at the number of training cells; a class with fewer training cells than k "
    "stays in (label_efficiency.<key>.fractions.<f>.classes_below_k) and wins only where it holds "
    "most of a cell's neighbours",
    "logreg": "fitted with any number of cells per class; a training set of one class predicts "
    "it for every cell",
    "label_propagation": "cells the kNN graph does not connect to a training cell get the training "
    "class frequencies (n_unreached)",
    "cross_validation": "stratified folds, n_splits = min(n_folds, largest class); a class with "
    "fewer cells than folds (labels.<key>.cv.classes_below_folds) is missing from the training "
    "part of some folds and gets probability 0 there",
}


def labelled(obs: pd.DataFrame, key: str) -> tuple[np.ndarray, list[str]]:
    """Class codes (-1: unlabelled) and class names of ``obs[key]``; fails naming the column when
    it is missing or has fewer than 2 labelled cells or classes."""
    if key not in obs.columns:
        raise DataError(
            f"label column '{key}' (eval.label_keys) is not in the data's .obs; "
            f"available: {sorted(map(str, obs.columns))}"
        )
    codes, classes = label_codes(obs[key])
    n_known = int((codes >= 0).sum())
    if n_known < 2:
        raise DataError(f"label column '{key}' has {n_known} labelled cells; need >= 2")
    if len(classes) < 2:
        raise DataError(f"label column '{key}' has a single class ({classes[0]}); need >= 2")
    return codes, classes


def cross_validated(
    rep: np.ndarray, codes: np.ndarray, classes: list[str], cfg: EvalConfig, *, seed: int
) -> dict[str, Any]:
    """kNN and logistic regression, k-fold cross-validated over the labelled cells."""
    known = codes >= 0
    y = codes[known]
    support = np.bincount(y, minlength=len(classes))
    entry: dict[str, Any] = {
        "n_labelled": int(known.sum()),
        "n_unlabelled": int((~known).sum()),
        "support": dict(zip(classes, support.tolist(), strict=True)),
    }
    for method in METHODS:
        proba, info = out_of_fold_proba(
            rep[known],
            y,
            len(classes),
            method=method,
            n_folds=cfg.n_folds,
            n_neighbors=cfg.n_neighbors,
            seed=seed,
        )
        entry[method] = classification_metrics(y, proba, classes)
        small = {c: int(n) for c, n in zip(classes, support, strict=True) if n < info["n_splits"]}
        entry["cv"] = {**info, "classes_below_folds": small}
    return entry


def transfer(
    rep: np.ndarray,
    codes: np.ndarray,
    classes: list[str],
    visible: np.ndarray,
    cfg: EvalConfig,
    *,
    seed: int,
) -> dict[str, Any]:
    """kNN and logistic regression fitted on the visible labelled cells, scored on the hidden
    labelled cells: the cells the classifier head is scored on, and the predictions written to
    annotated.h5ad."""
    train = visible & (codes >= 0)
    test = ~visible & (codes >= 0)
    seen = set(np.unique(codes[train]).tolist())
    out: dict[str, Any] = {
        "n_visible": int(train.sum()),
        "n_evaluated": int(test.sum()),
        "classes_without_labels": [c for i, c in enumerate(classes) if i not in seen],
    }
    if not train.any() or not test.any():
        return out
    for method in METHODS:
        proba, _ = transfer_proba(
            rep, codes, train, len(classes), method=method, n_neighbors=cfg.n_neighbors, seed=seed
        )
        out[method] = classification_metrics(codes[test], proba[test], classes)
    return out


def evaluate_representation(
    rep: np.ndarray, obs: pd.DataFrame, cfg: EvalConfig, *, seed: int, visible: np.ndarray
) -> dict[str, Any]:
    """``labels`` (cross-validated kNN / logistic regression and ``from_visible``),
    ``label_efficiency`` and ``latent_quality`` of ``rep`` for each key of ``cfg.label_keys``."""
    if rep.shape[0] != len(obs):
        raise DataError(f"latent has {rep.shape[0]} rows but the data has {len(obs)} cells")
    # shared by every draw's propagation
    graph = knn_graph(rep, n_neighbors=cfg.propagation_neighbors)
    out: dict[str, Any] = {"labels": {}, "label_efficiency": {}, "latent_quality": {}}
    for key in cfg.label_keys:
        codes, classes = labelled(obs, key)
        entry = cross_validated(rep, codes, classes, cfg, seed=seed)
        entry["from_visible"] = transfer(rep, codes, classes, visible, cfg, seed=seed)
        out["labels"][key] = entry
        out["label_efficiency"][key] = label_efficiency(
            rep, codes, classes, cfg, seed=seed, graph=graph
        )
        out["latent_quality"][key] = latent_quality(rep, codes, seed=seed)
    return out


def protocol(cfg: EvalConfig, *, seed: int) -> dict[str, Any]:
    return {
        "n_folds": cfg.n_folds,
        "n_neighbors": cfg.n_neighbors,
        "propagation_neighbors": cfg.propagation_neighbors,
        "seed": seed,
        "headline": f"knn on {cfg.label_keys[0]}",
        "label_fractions": list(cfg.label_fractions),
        "n_repeats": cfg.n_repeats,
        "rare_classes": RARE_CLASSES,
    }


def evaluate_latent(
    latent: np.ndarray, obs: pd.DataFrame, cfg: EvalConfig, *, seed: int
) -> dict[str, Any]:
    """Cross-validated kNN and logistic regression for each key of ``cfg.label_keys``: top-level
    ``accuracy`` and ``f1_macro`` (kNN on the first key), ``protocol`` and ``labels``."""
    if latent.shape[0] != len(obs):
        raise DataError(f"latent has {latent.shape[0]} rows but the data has {len(obs)} cells")
    labels = {
        key: cross_validated(latent, *labelled(obs, key), cfg, seed=seed) for key in cfg.label_keys
    }
    first = labels[cfg.label_keys[0]]["knn"]
    return {
        "accuracy": first["accuracy"],
        "f1_macro": first["f1_macro"],
        "protocol": protocol(cfg, seed=seed),
        "labels": labels,
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


def evaluate_run(
    latent: np.ndarray,
    obs: pd.DataFrame,
    cfg: Config,
    *,
    expression: Any = None,
    head: tuple[str, np.ndarray, list[str]] | None = None,
    max_bytes: float | None = None,
) -> dict[str, Any]:
    """The metrics.json of a run: the latent's metrics (top level), the classifier head's
    (``labels.<key>.joint`` and one point of ``label_efficiency.<key>.joint``) and the PCA
    baseline's under ``baseline``, all on the same cells, folds and label draws.

    ``expression``: the log-normalised HVGs (cells x genes), needed for the baseline; ``head``:
    the classifier head's ``(label key, class probabilities, class names)``; ``max_bytes``: the
    most a dense copy of ``expression`` may take (see :func:`pca_representation`).
    """
    seed = cfg.seed
    visible = visible_cells(obs, cfg)
    vae = evaluate_representation(latent, obs, cfg.eval, seed=seed, visible=visible)
    first = vae["labels"][cfg.eval.label_keys[0]]["knn"]
    metrics: dict[str, Any] = {"accuracy": first["accuracy"], "f1_macro": first["f1_macro"]}
    if head is not None:
        key, proba, categories = head
        joint = evaluate_joint(obs[key], proba, categories, visible=visible)
        vae["labels"].setdefault(key, {})["joint"] = joint
        if key in vae["label_efficiency"]:
            point = {**curve_point([joint["f1_macro"]]), "n_labelled": joint["n_visible"]}
            fraction = fraction_key(cfg.annotation.label_fraction)
            vae["label_efficiency"][key]["joint"] = {fraction: point}
        metrics["joint_f1_macro"] = joint["f1_macro"]
    baseline = None
    if cfg.baseline.method == "pca":
        if expression is None:
            raise DataError("the PCA baseline needs the expression matrix (baseline.method: pca)")
        rep = pca_representation(expression, cfg.baseline, seed=seed, max_bytes=max_bytes)
        baseline = {
            "method": "pca",
            "n_comps": int(rep.shape[1]),
            "scale": cfg.baseline.scale,
            **evaluate_representation(rep, obs, cfg.eval, seed=seed, visible=visible),
        }
        metrics["baseline_f1_macro"] = baseline["labels"][cfg.eval.label_keys[0]]["knn"]["f1_macro"]
    metrics["protocol"] = {
        **protocol(cfg.eval, seed=seed),
        "latent_dim": int(latent.shape[1]),
        "n_visible": int(visible.sum()),
    }
    metrics.update(vae)
    if baseline is not None:
        metrics["baseline"] = baseline
    return metrics


def summary_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Macro F1 per label key, method, representation (vae, pca) and label fraction ("cv": k-fold
    cross-validation on all labels) from a metrics.json tree; one row each."""
    rows = []
    sources = {"vae": metrics, "pca": metrics.get("baseline") or {}}
    for rep, tree in sources.items():
        for key, entry in tree.get("labels", {}).items():
            rows.extend(
                (key, method, rep, "cv", entry[method]["f1_macro"], None)
                for method in METHODS
                if method in entry
            )
        for key, curves in tree.get("label_efficiency", {}).items():
            for method, points in curves.items():
                if method == "fractions":
                    continue
                for fraction, point in points.items():
                    rows.append(
                        (key, method, rep, fraction, point["f1_macro"], point["f1_macro_sd"])
                    )
    columns = ["label_key", "method", "representation", "fraction", "f1_macro", "sd"]
    return pd.DataFrame(rows, columns=columns)
