"""The whole metrics.json of a run (:func:`evaluate_run`): the VAE latent's metrics, the
classifier head's and the PCA baseline's on the same cells, folds and label draws, with the
predictions and neighbours that annotated.h5ad reuses, each computed once. Never trains the VAE
and never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from src.app.config import Config, EvalConfig
from src.app.core.data.graph import nearest_neighbours
from src.app.core.data.labels import visible_cells
from src.app.core.data.preprocess import batch_column
from src.app.core.evaluate.classify import METHODS
from src.app.core.evaluate.integration import (
    TRANSFER_PROTOCOL,
    batch_section,
    make_baseline,
    transfer_section,
)
from src.app.core.evaluate.label_efficiency import curve_point, fraction_key
from src.app.core.evaluate.metrics import classification_metrics
from src.app.core.evaluate.representation import (
    cross_validated,
    evaluate_representations,
    labelled,
)
from src.app.errors import DataError

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


def protocol(cfg: EvalConfig, *, seed: int) -> dict[str, Any]:
    return {
        "label_keys": list(cfg.label_keys),
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


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage computed: ``metrics`` (metrics.json), the latent's ``predictions``
    (class probabilities of every cell from the visible labels, by label key and method), the
    ``pca`` baseline (cells, n_comps) or None, the latent's ``neighbours`` (indices and
    distances, self excluded) that label propagation used and the UMAP reuses, which cells'
    labels were ``visible``, and the PCA after ``harmony`` (the baseline then) or None."""

    metrics: dict[str, Any]
    predictions: dict[str, dict[str, np.ndarray]]
    pca: np.ndarray | None
    neighbours: tuple[np.ndarray, np.ndarray]
    visible: np.ndarray
    harmony: np.ndarray | None = None


def _with_head(vae: dict[str, Any], obs: pd.DataFrame, cfg: Config, head: Any, visible: Any):
    """Adds the classifier head's ``joint`` entry and curve point to ``vae``; returns its F1."""
    key, proba, categories = head
    joint = evaluate_joint(obs[key], proba, categories, visible=visible)
    vae["labels"].setdefault(key, {})["joint"] = joint
    if key in vae["label_efficiency"]:
        point = {**curve_point([joint["f1_macro"]]), "n_labelled": joint["n_visible"]}
        fraction = fraction_key(cfg.annotation.label_fraction)
        vae["label_efficiency"][key]["joint"] = {fraction: point}
    return joint["f1_macro"]


def latent_neighbours(latent: np.ndarray, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The one neighbour search of the latent (indices and distances, self excluded): label
    propagation and the UMAP slice it, so it has the larger of their k."""
    k = max(cfg.eval.propagation_neighbors, cfg.viz.n_neighbors - 1)
    return nearest_neighbours(latent, n_neighbors=k)


def evaluate_run(
    latent: np.ndarray,
    obs: pd.DataFrame,
    cfg: Config,
    *,
    expression: Any = None,
    head: tuple[str, np.ndarray, list[str]] | None = None,
    max_bytes: float | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> Evaluation:
    """The metrics.json of a run: the latent's metrics (top level), the classifier head's
    (``labels.<key>.joint`` and one point of ``label_efficiency.<key>.joint``) and the PCA
    baseline's under ``baseline``, all on the same cells, folds and label draws; with
    ``data.batch_key`` the baseline is the PCA after Harmony (``baseline.harmony``) and a
    ``batch`` section holds scib-metrics' scores; with ``eval.transfer_key`` a ``transfer``
    section holds the cross-batch label transfer.

    ``expression``: the log-normalised HVGs (cells x genes), needed for the baseline; ``head``:
    the classifier head's ``(label key, class probabilities, class names)``; ``max_bytes``: the
    most a dense copy of ``expression`` may take (see :func:`pca_representation`);
    ``neighbours``: :func:`latent_neighbours` of ``latent``, searched here when not given.
    """
    seed = cfg.seed
    batches = None
    if cfg.data.batch_key is not None:
        batches = batch_column(obs, cfg.data.batch_key, where="preprocessed data")
    visible = visible_cells(obs, cfg)
    if neighbours is None:
        neighbours = latent_neighbours(latent, cfg)
    reps = {"vae": (latent, neighbours[0])}
    base = make_baseline(expression, cfg, batches, max_bytes=max_bytes)
    if base is not None:
        reps["pca"] = (base.rep, None)
    done = evaluate_representations(reps, obs, cfg.eval, seed=seed, visible=visible)
    vae, predictions = done["vae"]
    first = vae["labels"][cfg.eval.label_keys[0]]["knn"]
    metrics: dict[str, Any] = {"accuracy": first["accuracy"], "f1_macro": first["f1_macro"]}
    if head is not None:
        metrics["joint_f1_macro"] = _with_head(vae, obs, cfg, head, visible)
    if base is not None:
        baseline = {"method": base.method, "n_comps": int(base.pca.shape[1])}
        baseline.update({"scale": cfg.baseline.scale, **done["pca"][0]})
        metrics["baseline_f1_macro"] = baseline["labels"][cfg.eval.label_keys[0]]["knn"]["f1_macro"]
    metrics["protocol"] = {
        **protocol(cfg.eval, seed=seed),
        "latent_dim": int(latent.shape[1]),
        "n_visible": int(visible.sum()),
    }
    metrics.update(vae)
    if base is not None:
        metrics["baseline"] = baseline
    if batches is not None:
        metrics["batch"], metrics["protocol"]["batch"] = batch_section(
            latent, obs, batches, base, cfg
        )
    if cfg.eval.transfer_key is not None:
        metrics["transfer"] = transfer_section(latent, obs, base, cfg)
        metrics["protocol"]["transfer"] = dict(TRANSFER_PROTOCOL)
    pca = None if base is None else base.pca
    harmonised = None if base is None else base.harmonised
    return Evaluation(metrics, predictions, pca, neighbours, visible, harmonised)


def summary_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Macro F1 per label key, method, representation (vae, and the baseline by its method:
    pca, pca+harmony) and protocol in ``fraction``: "cv" (k-fold cross-validation on all
    labels), a label fraction, or "transfer" (trained on the reference batches, scored on the
    others); one row each, from a metrics.json tree. scib-metrics' batch scores are not F1s:
    :func:`src.app.core.evaluate.integration.batch_table` tabulates them."""
    rows = []
    baseline = metrics.get("baseline") or {}
    sources = {"vae": metrics, baseline.get("method", "pca"): baseline}
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
    for key, entry in metrics.get("transfer", {}).get("labels", {}).items():
        for rep in sources:
            rows.extend(
                (key, method, rep, "transfer", scores["f1_macro"], None)
                for method, scores in entry.get(rep, {}).items()
            )
    columns = ["label_key", "method", "representation", "fraction", "f1_macro", "sd"]
    return pd.DataFrame(rows, columns=columns)
