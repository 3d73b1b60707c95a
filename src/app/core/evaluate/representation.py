"""Annotation metrics of one representation (the VAE latent, or the PCA baseline): per label key,
kNN (k=15) and logistic regression cross-validated over the labelled cells, the same two fitted on
the visible labels and scored on the hidden ones (as the classifier head is), the label-efficiency
curve and latent quality. Pure NumPy / scikit-learn; never imports torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from src.app.config import EvalConfig
from src.app.core.data.graph import knn_graph
from src.app.core.data.labels import label_codes
from src.app.core.evaluate.classify import METHODS, out_of_fold_proba, transfer_proba
from src.app.core.evaluate.label_efficiency import label_efficiency
from src.app.core.evaluate.metrics import classification_metrics, latent_quality
from src.app.errors import DataError


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
    fits: dict,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """kNN and logistic regression fitted on the visible labelled cells, scored on the hidden
    labelled cells (the cells the classifier head is scored on); also returns each method's
    class probabilities for every cell, the predictions written to annotated.h5ad. ``fits``:
    the cache of :func:`transfer_proba` shared with the label-efficiency curve."""
    train = visible & (codes >= 0)
    test = ~visible & (codes >= 0)
    seen = set(np.unique(codes[train]).tolist())
    out: dict[str, Any] = {
        "n_visible": int(train.sum()),
        "n_evaluated": int(test.sum()),
        "classes_without_labels": [c for i, c in enumerate(classes) if i not in seen],
    }
    predictions: dict[str, np.ndarray] = {}
    if not train.any():
        return out, predictions
    for method in METHODS:
        predictions[method], _ = transfer_proba(
            rep, codes, train, len(classes), method=method, n_neighbors=cfg.n_neighbors,
            seed=seed, fits=fits,
        )  # fmt: skip
        if test.any():
            out[method] = classification_metrics(codes[test], predictions[method][test], classes)
    return out, predictions


def evaluate_key(
    rep: np.ndarray,
    codes: np.ndarray,
    classes: list[str],
    cfg: EvalConfig,
    *,
    seed: int,
    visible: np.ndarray,
    graph: Any,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """One label key on one representation: its ``labels`` entry (cross-validated and
    ``from_visible``), ``label_efficiency`` curve, ``latent_quality`` and the ``from_visible``
    class probabilities of every cell by method. ``graph``: label propagation's kNN graph."""
    fits: dict = {}  # the visible draw is also a draw of the curve: each fit once
    entry = cross_validated(rep, codes, classes, cfg, seed=seed)
    entry["from_visible"], predictions = transfer(
        rep, codes, classes, visible, cfg, seed=seed, fits=fits
    )
    curve = label_efficiency(rep, codes, classes, cfg, seed=seed, graph=graph, fits=fits)
    return entry, curve, latent_quality(rep, codes, seed=seed), predictions


def evaluate_representations(
    reps: dict[str, tuple[np.ndarray, np.ndarray | None]],
    obs: pd.DataFrame,
    cfg: EvalConfig,
    *,
    seed: int,
    visible: np.ndarray,
) -> dict[str, tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]]:
    """:func:`evaluate_representation` for each ``name -> (rep, neighbours or None)``.

    The fits run on one BLAS / OpenMP thread: they are hundreds of small problems, for which
    more threads only wait on each other (PBMC 3k, latent and PCA, 2 label keys: 16.4 s on 2
    threads, 5.2 s on 1; spreading them over 2 processes instead gave 5.8 s, start-up included).
    """
    from threadpoolctl import threadpool_limits

    labels = {key: labelled(obs, key) for key in cfg.label_keys}
    out = {}
    with threadpool_limits(limits=1):
        for name, (rep, neighbours) in reps.items():
            if rep.shape[0] != len(obs):
                raise DataError(f"{name} has {rep.shape[0]} rows but the data has {len(obs)} cells")
            # shared by every draw's propagation
            graph = knn_graph(rep, n_neighbors=cfg.propagation_neighbors, neighbours=neighbours)
            scores: dict[str, Any] = {"labels": {}, "label_efficiency": {}, "latent_quality": {}}
            predictions = {}
            for key in cfg.label_keys:
                entry, curve, quality, predictions[key] = evaluate_key(
                    rep, *labels[key], cfg, seed=seed, visible=visible, graph=graph
                )
                scores["labels"][key] = entry
                scores["label_efficiency"][key] = curve
                scores["latent_quality"][key] = quality
            out[name] = (scores, predictions)
    return out


def evaluate_representation(
    rep: np.ndarray,
    obs: pd.DataFrame,
    cfg: EvalConfig,
    *,
    seed: int,
    visible: np.ndarray,
    neighbours: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """``labels`` (cross-validated kNN / logistic regression and ``from_visible``),
    ``label_efficiency`` and ``latent_quality`` of ``rep`` for each key of ``cfg.label_keys``,
    and the ``from_visible`` class probabilities of every cell by key and method.
    ``neighbours``: the indices of :func:`nearest_neighbours` of ``rep`` when already searched.
    """
    reps = {"the representation": (rep, neighbours)}
    return evaluate_representations(reps, obs, cfg, seed=seed, visible=visible)[
        "the representation"
    ]
