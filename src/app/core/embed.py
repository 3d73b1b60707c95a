"""The embed stage's core: latent means of every cell from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.app.config import Config
from src.app.core.data_adapter import DataAdapter
from src.app.core.h5ad import write_with_additions
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

    ``h5ad_out`` is a copy of the preprocessed data plus ``.obsm["X_vae"]`` and, for a model with
    a classifier head, ``.obs["predicted_<label_key>"]``,
    ``.obs["predicted_<label_key>_confidence"]``, ``.obs["label_visible"]``,
    ``.obsm["label_proba"]`` and ``.uns["label_categories"]``. Neither file is written unless
    both are complete; the data's matrices are streamed, never loaded whole.
    """
    runtime = runtime if runtime is not None else runtime_for(cfg)
    model = ModelAdapter(cfg, runtime=runtime).load(model_dir)
    data = DataAdapter(cfg, runtime=runtime, path=data_path)
    model.check_genes(data.gene_names)
    latent = model.predict(data.iter_all_batches())
    obs: dict[str, Any] = {}
    obsm: dict[str, np.ndarray] = {LATENT_KEY: latent}
    uns: dict[str, Any] = {}
    if model.label_categories:
        import pandas as pd

        key = cfg.annotation.label_key
        labels, proba = model.predict_labels(data.iter_all_batches())
        obs[predicted_key(key)] = pd.Categorical(labels, categories=model.label_categories)
        obs[f"{predicted_key(key)}_confidence"] = proba.max(1)
        obs[VISIBLE_KEY] = data.label_visible
        obsm[PROBA_KEY] = proba.astype(np.float32)
        uns[CATEGORIES_KEY] = np.asarray(model.label_categories, dtype=object)
        uns[LABEL_KEY_KEY] = key
    with atomic_path(latent_out) as tmp_latent, atomic_path(h5ad_out) as tmp_h5ad:
        np.save(tmp_latent, latent)
        write_with_additions(data_path, tmp_h5ad, obs=obs, obsm=obsm, uns=uns)
    return latent
