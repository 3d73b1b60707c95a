"""The embed stage's core: one encoder pass over every cell of a trained checkpoint, giving the
latent means and the classifier head's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.app.config import Config
from src.app.core.data.keys import (
    CATEGORIES_KEY,
    LABEL_KEY_KEY,
    LATENT_KEY,
    PROBA_KEY,
    VISIBLE_KEY,
    confidence_key,
    predicted_key,
)
from src.app.core.data_adapter import DataAdapter
from src.app.core.model.runtime import runtime_for
from src.app.core.model_adapter import ModelAdapter
from src.app.io_utils import atomic_path
from src.app.machine import Runtime


def run_embedding(
    cfg: Config,
    *,
    model_dir: str | Path,
    data_path: str | Path,
    latent_out: str | Path,
    h5ad_out: str | Path,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Write ``latent_out`` (.npy, cells x latent_dim) and ``h5ad_out``; returns the latent.

    ``h5ad_out`` holds the cells (no genes, no matrices: the evaluate stage joins it to the
    preprocessed data) with ``.obsm["X_vae"]`` and, for a model with a classifier head,
    ``.obs["predicted_<label_key>"]`` and ``_confidence``, ``.obs["label_visible"]``,
    ``.obsm["label_proba"]``, ``.uns["label_categories"]`` and ``.uns["label_key"]``. Neither
    file is written unless both are complete; the data's matrices are streamed.
    """
    import anndata as ad
    import pandas as pd

    runtime = runtime if runtime is not None else runtime_for(cfg)
    model = ModelAdapter(cfg, runtime=runtime).load(model_dir)
    model.check_batch_key(cfg.data.batch_key, where=model_dir)
    data = DataAdapter(
        cfg, runtime=runtime, path=data_path, batch_categories=model.batch_categories or None
    )
    model.check_genes(data.gene_names)
    latent, proba = model.embed(data.iter_all_batches())
    obs = pd.DataFrame(index=data.obs.index.astype(str))
    obsm: dict[str, np.ndarray] = {LATENT_KEY: latent}
    uns: dict[str, Any] = {}
    if proba is not None:
        key = cfg.annotation.label_key
        labels = model.label_names(proba)
        obs[predicted_key(key)] = pd.Categorical(labels, categories=model.label_categories)
        obs[confidence_key(key)] = proba.max(1).astype(np.float32)
        obs[VISIBLE_KEY] = data.label_visible
        obsm[PROBA_KEY] = proba.astype(np.float32)
        uns[CATEGORIES_KEY] = np.asarray(model.label_categories, dtype=object)
        uns[LABEL_KEY_KEY] = key
    cells = ad.AnnData(obs=obs, obsm=obsm, uns=uns)
    with atomic_path(latent_out) as tmp_latent, atomic_path(h5ad_out) as tmp_h5ad:
        np.save(tmp_latent, latent)
        cells.write_h5ad(tmp_h5ad)
    return latent
