"""The batch covariate's parts of a run's metrics.json (:func:`src.app.core.evaluate.run.
evaluate_run`): the baseline with Harmony, the ``batch`` section (scib-metrics' scores) and the
``transfer`` section (cross-batch label transfer), and :func:`batch_table` of them. Each runs
only where its key is set (``data.batch_key``, ``eval.transfer_key``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from src.app.config import Config
from src.app.core.evaluate.baseline import harmony, pca_representation
from src.app.core.evaluate.batch import (
    BATCH_CORRECTION,
    BIO_CONSERVATION,
    SKIPPED,
    batch_metrics,
    cross_batch_transfer,
)
from src.app.core.evaluate.classify import METHODS
from src.app.errors import DataError

# how the transfer section is scored; written to metrics.json's protocol when it is computed
TRANSFER_PROTOCOL = {
    "methods": list(METHODS),
    "train": "the labelled cells whose eval.transfer_key value is in eval.transfer_reference",
    "scored": "every other labelled cell (the predicted cells); a class the reference lacks "
    "is never predicted and scores f1 0",
    "representations": "the latent (vae) and the baseline (its method label)",
}


@dataclass(frozen=True)
class Baseline:
    """The baseline of a run: its ``method`` label (pca, pca+harmony), the unintegrated ``pca``
    and the representation evaluated (``harmonised`` where Harmony ran, else ``pca``)."""

    method: str
    pca: np.ndarray
    harmonised: np.ndarray | None

    @property
    def rep(self) -> np.ndarray:
        return self.pca if self.harmonised is None else self.harmonised


def make_baseline(
    expression: Any, cfg: Config, batches: Any, *, max_bytes: float | None
) -> Baseline | None:
    """The PCA baseline (``baseline.method: pca``), with Harmony over ``batches`` where a batch
    key is set and ``baseline.harmony``; None for ``baseline.method: none``."""
    if cfg.baseline.method != "pca":
        return None
    if expression is None:
        raise DataError("the PCA baseline needs the expression matrix (baseline.method: pca)")
    pca = pca_representation(expression, cfg.baseline, seed=cfg.seed, max_bytes=max_bytes)
    if batches is None or not cfg.baseline.harmony or len(set(batches)) < 2:
        return Baseline("pca", pca, None)
    return Baseline("pca+harmony", pca, harmony(pca, batches, seed=cfg.seed))


def batch_section(
    latent: np.ndarray, obs: pd.DataFrame, batches: Any, base: Baseline | None, cfg: Config
) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json's ``batch`` section (scib-metrics' scores of the latent, the unintegrated PCA
    and the harmonised one, on the first label key's labelled cells) and its protocol entry."""
    key = cfg.eval.label_keys[0]
    embeddings = {"vae": latent}
    if base is not None:
        embeddings["pca"] = base.pca
        if base.harmonised is not None:
            embeddings[base.method] = base.harmonised
    labels = obs[key].astype("object").to_numpy()
    pre = None if base is None else base.pca
    batches = np.asarray(batches)
    scores = {}  # one batch among the labelled cells: nothing to integrate or score
    if len(pd.unique(batches[pd.notna(labels)])) >= 2:
        scores = batch_metrics(embeddings, labels, batches, pre_integrated=pre, seed=cfg.seed)
    section = {
        "batch_key": cfg.data.batch_key,
        "n_batches": len(pd.unique(batches)),
        "label_key": key,
        "n_cells": int(pd.notna(labels).sum()),
        "representations": scores,
    }
    protocol = {
        "batch_key": cfg.data.batch_key,
        "label_key": key,
        "library": f"scib-metrics {_version('scib-metrics')}",
        "bio_conservation": list(BIO_CONSERVATION),
        "batch_correction": list(BATCH_CORRECTION),
        "aggregation": "raw metric values (no min-max scaling across representations): the "
        "mean of each type, total = 0.6 bio_conservation + 0.4 batch_correction",
        "neighbours": "exact euclidean, the cell itself included (lisi 90, graph 15)",
        "pre_integrated": "pca" if pre is not None else None,
        "not_computed": dict(SKIPPED),
        "cells": f"the labelled cells of {key}",
    }
    return section, protocol


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def transfer_section(
    latent: np.ndarray, obs: pd.DataFrame, base: Baseline | None, cfg: Config
) -> dict[str, Any]:
    """metrics.json's ``transfer`` section: :func:`cross_batch_transfer` of the latent and the
    baseline for each label key."""
    embeddings = {"vae": latent}
    if base is not None:
        embeddings[base.method] = base.rep
    return cross_batch_transfer(
        embeddings,
        obs,
        label_keys=cfg.eval.label_keys,
        transfer_key=cfg.eval.transfer_key,
        reference=cfg.eval.transfer_reference,
        n_neighbors=cfg.eval.n_neighbors,
        seed=cfg.seed,
    )


def batch_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """scib-metrics' scores of a metrics.json's ``batch`` section: one row per representation,
    ``bio_conservation``, ``batch_correction`` and ``total`` first, then each metric; empty
    without a batch section."""
    scores = metrics.get("batch", {}).get("representations", {})
    frame = pd.DataFrame.from_dict(scores, orient="index")
    frame.index.name = "representation"
    first = [c for c in ("bio_conservation", "batch_correction", "total") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
