"""The embed stage's core: latent means of every cell from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.app.config import Config
from src.app.core.data_adapter import DataAdapter
from src.app.core.model_adapter import ModelAdapter
from src.app.core.runtime import runtime_for
from src.app.io_utils import atomic_path
from src.app.machine import Runtime

LATENT_KEY = "X_vae"


def run_embedding(
    cfg: Config,
    *,
    model_dir: str | Path,
    data_path: str | Path,
    latent_out: str | Path,
    h5ad_out: str | Path,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Write ``latent_out`` (.npy, cells x latent_dim) and ``h5ad_out`` (the data with
    ``.obsm["X_vae"]``); returns the latent."""
    runtime = runtime if runtime is not None else runtime_for(cfg)
    model = ModelAdapter(cfg, runtime=runtime).load(model_dir)
    data = DataAdapter(cfg, runtime=runtime, path=data_path)
    model.check_genes(data.gene_names)
    latent = model.predict(data.iter_all_batches())
    with atomic_path(latent_out) as tmp:
        np.save(tmp, latent)
    adata = data.adata
    adata.obsm[LATENT_KEY] = latent
    with atomic_path(h5ad_out) as tmp:
        adata.write_h5ad(tmp)
    return latent
