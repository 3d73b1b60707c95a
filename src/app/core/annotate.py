"""The annotate stage's core (scanpy's ``tl``): the embedded data plus its UMAP, the labels
predicted from the latent, and the run's config and metrics, as one AnnData that opens with
``scanpy.read_h5ad`` and plots with ``sc.pl.umap`` as it is. Never imports torch."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from src.app.config import Config, VizConfig, config_to_dict
from src.app.core.baseline import pca_representation
from src.app.core.classify import METHODS, label_codes, transfer_proba, visible_cells
from src.app.core.colours import UNLABELLED_COLOUR, category_colours
from src.app.core.keys import (
    CONFIG_UNS,
    LATENT_KEY,
    METRICS_UNS,
    PCA_KEY,
    VISIBLE_KEY,
    colours_key,
    confidence_key,
    predicted_key,
)
from src.app.errors import DataError

if TYPE_CHECKING:
    import anndata as ad


def compute_umap(
    adata: ad.AnnData, cfg: VizConfig, *, seed: int, use_rep: str = LATENT_KEY
) -> None:
    """Neighbour graph and UMAP of ``.obsm[use_rep]`` with scanpy, seeded; writes
    ``.obsp["distances"]``, ``.obsp["connectivities"]``, ``.uns["neighbors"]``, ``.uns["umap"]``
    and ``.obsm["X_umap"]``."""
    import scanpy as sc

    sc.pp.neighbors(
        adata,
        use_rep=use_rep,
        n_neighbors=max(2, min(cfg.n_neighbors, adata.n_obs - 1)),
        method=cfg.neighbors_method,
        random_state=seed,
    )
    sc.tl.umap(adata, min_dist=cfg.min_dist, random_state=seed)


def annotate(
    adata: ad.AnnData, cfg: Config, *, metrics: dict[str, Any], max_bytes: float | None = None
) -> ad.AnnData:
    """Annotate ``adata`` (the embed stage's output) in place and return it.

    Writes ``.obsm["X_umap"]`` (and the neighbour graph), ``.obsm["X_pca"]`` (the PCA baseline,
    unless ``baseline.method`` is none), ``.obs["label_visible"]``, and for each key of
    ``eval.label_keys``: ``.obs["predicted_<key>_<knn|logreg>"]`` and ``..._confidence`` from
    classifiers on the latent fitted on the visible labels, the label column as a categorical of
    sorted class names, and ``.uns["<column>_colors"]`` for the label and prediction columns (the
    classifier head's ``predicted_<key>`` included). ``.uns["config"]`` and ``.uns["metrics"]``
    hold the run's config and ``metrics`` as JSON text. ``max_bytes`` bounds the PCA's dense
    copy (see :func:`pca_representation`).
    """
    if LATENT_KEY not in adata.obsm:
        raise DataError(f"the data has no .obsm['{LATENT_KEY}']; run the embed stage first")
    latent = np.asarray(adata.obsm[LATENT_KEY])
    compute_umap(adata, cfg.viz, seed=cfg.seed)
    if cfg.baseline.method == "pca":
        adata.obsm[PCA_KEY] = pca_representation(
            adata.X, cfg.baseline, seed=cfg.seed, max_bytes=max_bytes
        )
    visible = visible_cells(adata.obs, cfg)
    adata.obs[VISIBLE_KEY] = visible
    for key in cfg.eval.label_keys:
        if key not in adata.obs.columns:
            raise DataError(f"label column '{key}' (eval.label_keys) is not in the data's .obs")
        codes, classes = label_codes(adata.obs[key])
        adata.obs[key] = pd.Categorical.from_codes(codes, categories=classes)
        columns = [key]
        train = visible & (codes >= 0)
        for method in METHODS if train.any() else ():
            proba, _ = transfer_proba(
                latent,
                codes,
                train,
                len(classes),
                method=method,
                n_neighbors=cfg.eval.n_neighbors,
                seed=cfg.seed,
            )
            column = predicted_key(key, method)
            adata.obs[column] = pd.Categorical.from_codes(proba.argmax(axis=1), categories=classes)
            adata.obs[confidence_key(key, method)] = proba.max(axis=1).astype(np.float32)
            columns.append(column)
        head = predicted_key(key)  # the classifier head's, from the embed stage
        if head in adata.obs.columns:
            values = adata.obs[head].astype("object")
            if set(values.dropna().astype(str)) <= set(classes):
                adata.obs[head] = pd.Categorical(values.astype(str), categories=classes)
                columns.append(head)
        colours = category_colours(classes)
        for column in columns:
            categories = adata.obs[column].cat.categories
            adata.uns[colours_key(column)] = [colours.get(c, UNLABELLED_COLOUR) for c in categories]
    adata.uns[CONFIG_UNS] = json.dumps(config_to_dict(cfg))
    adata.uns[METRICS_UNS] = json.dumps(metrics)
    return adata
