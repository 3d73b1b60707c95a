"""Preprocess raw counts with scanpy as in its PBMC 3k tutorial; the preprocess stage's core."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from src.app.config import PreprocessConfig
from src.app.core.data.qc import run_qc
from src.app.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

COUNTS_LAYER = "counts"
SPLIT_KEY = "split"
# z-scores are clipped here, as sc.pp.scale(max_value=10) in scanpy's PBMC 3k tutorial: by the
# PCA baseline and by the model's standardised input
SCALE_MAX = 10.0


def split_labels(n_cells: int, *, val_fraction: float, seed: int) -> np.ndarray:
    """Deterministic train/val assignment: a seeded permutation, the first share is 'val'."""
    n_val = round(n_cells * val_fraction)
    order = np.random.default_rng(seed).permutation(n_cells)
    split = np.full(n_cells, "train", dtype=object)
    split[order[:n_val]] = "val"
    return split


def batch_column(obs, batch_key: str, *, where: str):
    """The batch of each cell (categorical strings), checked: the column exists and no cell
    lacks a batch."""
    import pandas as pd

    if batch_key not in obs:
        raise DataError(
            f"data.batch_key '{batch_key}' is not a column of the {where}'s .obs; available: "
            f"{sorted(map(str, obs.columns))}"
        )
    column = obs[batch_key]
    missing = int(column.isna().sum())
    if missing:
        raise DataError(
            f"data.batch_key '{batch_key}': {missing} of {len(column)} cells of the {where} "
            "have no batch (NaN); give every cell a batch"
        )
    return pd.Categorical(column.astype(str))


def preprocess(
    adata: ad.AnnData, cfg: PreprocessConfig, *, seed: int, batch_key: str | None = None
) -> ad.AnnData:
    """QC (``src.app.core.data.qc``: ``cfg.qc``, per batch with ``batch_key``), normalise, log1p
    and select highly variable genes (per batch, as scanpy's ``highly_variable_genes(batch_key=
    ...)``).

    Returns a new AnnData of the kept cells and HVGs with log-normalised values in ``.X``, raw
    counts in ``.layers["counts"]``, QC metrics, ``obs["split"]`` ('train'/'val') and the QC
    report in ``uns["preprocess"]["qc"]``. Fails when QC removes more than
    ``cfg.max_removed_fraction`` of the cells or too few remain for the train/val split.
    """
    adata = adata.copy()
    adata.obs_names_make_unique()
    if batch_key is not None:
        adata.obs[batch_key] = batch_column(adata.obs, batch_key, where="raw data")
    adata, qc = run_qc(adata, cfg, batch_key=batch_key)
    n_val = round(adata.n_obs * cfg.val_fraction)
    if adata.n_obs - n_val < 2:
        raise DataError(
            f"after QC only {adata.n_obs} cells x {adata.n_vars} genes remain, "
            f"{adata.n_obs - n_val} of them for training after the val_fraction="
            f"{cfg.val_fraction} split (need >= 2); check the preprocess thresholds"
        )
    adata = normalise_select(adata, cfg, seed=seed, batch_key=batch_key)
    adata.uns["preprocess"]["qc"] = qc
    return adata


def normalise_select(
    adata: ad.AnnData,
    cfg: PreprocessConfig,
    *,
    seed: int,
    batch_key: str | None = None,
    split: np.ndarray | None = None,
) -> ad.AnnData:
    """Raw counts -> log-normalised HVGs (per batch with ``batch_key``): the preprocess
    recipe after QC, also the map stage's refit on the genes a query shares. ``split``: each
    cell's 'train'/'val' (default: a seeded draw of ``cfg.val_fraction``)."""
    import scanpy as sc

    adata.layers[COUNTS_LAYER] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=cfg.target_sum)
    sc.pp.log1p(adata)
    n_top = min(cfg.n_top_genes, adata.n_vars)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat", batch_key=batch_key)
    keep = adata.var["highly_variable"].to_numpy()
    if split is None:
        split = split_labels(adata.n_obs, val_fraction=cfg.val_fraction, seed=seed)
    adata = adata[:, keep].copy()
    adata.obs[SPLIT_KEY] = pd.Categorical(np.asarray(split, dtype=object))
    adata.uns.pop("log1p", None)
    adata.uns["preprocess"] = {"n_top_genes": n_top, "target_sum": cfg.target_sum}
    if batch_key is not None:
        adata.obs[batch_key] = adata.obs[batch_key].cat.remove_unused_categories()
        adata.uns["preprocess"]["batch_key"] = batch_key
    return adata
