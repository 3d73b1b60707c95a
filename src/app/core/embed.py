"""The embed stage's core: latent means of every cell from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.app.config import Config
from src.app.core.data_adapter import DataAdapter
from src.app.core.keys import (
    CATEGORIES_KEY,
    LABEL_KEY_KEY,
    LATENT_KEY,
    PROBA_KEY,
    VISIBLE_KEY,
    predicted_key,
)
from src.app.core.model_adapter import ModelAdapter
from src.app.core.runtime import runtime_for
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

    ``h5ad_out`` is the preprocessed data plus ``.obsm["X_vae"]`` and, for a model with a
    classifier head, ``.obs["predicted_<label_key>"]``, ``.obs["predicted_<label_key>_confidence"]``,
    ``.obs["label_visible"]``, ``.obsm["label_proba"]`` and ``.uns["label_categories"]``.
    """
    runtime = runtime if runtime is not None else runtime_for(cfg)
    model = ModelAdapter(cfg, runtime=runtime).load(model_dir)
    data = DataAdapter(cfg, runtime=runtime, path=data_path)
    model.check_genes(data.gene_names)
    latent = model.predict(data.iter_all_batches())
    with atomic_path(latent_out) as tmp:
        np.save(tmp, latent)
    adata = data.adata
    adata.obsm[LATENT_KEY] = latent
    if model.label_categories:
        import pandas as pd

        key = cfg.annotation.label_key
        labels, proba = model.predict_labels(data.iter_all_batches())
        adata.obs[predicted_key(key)] = pd.Categorical(labels, categories=model.label_categories)
        adata.obs[f"{predicted_key(key)}_confidence"] = proba.max(1)
        adata.obs[VISIBLE_KEY] = data.label_visible
        adata.obsm[PROBA_KEY] = proba.astype(np.float32)
        adata.uns[CATEGORIES_KEY] = list(model.label_categories)
        adata.uns[LABEL_KEY_KEY] = key
    with atomic_path(h5ad_out) as tmp:
        adata.write_h5ad(tmp)
    return latent
