"""Preprocess raw counts with scanpy as in its PBMC 3k tutorial; the preprocess stage's core."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from src.app.config import PreprocessConfig
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
    """QC, normalise, log1p and select highly variable genes (per batch with ``batch_key``,
    as scanpy's ``highly_variable_genes(batch_key=...)``).

    Returns a new AnnData of the kept cells and HVGs with log-normalised values in ``.X``, raw
    counts in ``.layers["counts"]``, QC metrics and ``obs["split"]`` ('train'/'val'). Logs what
    QC removed (cells and genes without counts among them); fails when too few cells remain for
    the train/val split.
    """
    import scanpy as sc

    adata = adata.copy()
    adata.obs_names_make_unique()
    if batch_key is not None:
        adata.obs[batch_key] = batch_column(adata.obs, batch_key, where="raw data")
    n_cells, n_genes = adata.shape
    x = adata.X
    empty_cells = int((np.asarray(x.sum(axis=1)).ravel() == 0).sum())
    empty_genes = int((np.asarray(x.sum(axis=0)).ravel() == 0).sum())
    sc.pp.filter_cells(adata, min_genes=cfg.min_genes)
    sc.pp.filter_genes(adata, min_cells=cfg.min_cells)
    qc = (
        f"{n_cells - adata.n_obs} of {n_cells} cells have fewer than min_genes={cfg.min_genes} "
        f"genes ({empty_cells} no counts at all) and {n_genes - adata.n_vars} of {n_genes} genes "
        f"are in fewer than min_cells={cfg.min_cells} cells ({empty_genes} in none)"
    )
    if adata.n_obs < 2 or adata.n_vars < 2:
        raise DataError(f"after QC only {adata.n_obs} cells x {adata.n_vars} genes remain: {qc}")
    adata.var["mt"] = adata.var_names.str.upper().str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    # written as "not below" so a NaN share (a cell without counts) is removed too
    too_many = ~(adata.obs["n_genes_by_counts"] < cfg.max_genes).to_numpy()
    mito = ~(adata.obs["pct_counts_mt"] < cfg.max_pct_mito).to_numpy()
    qc += (
        f"; {int(too_many.sum())} cells have max_genes={cfg.max_genes} genes or more and "
        f"{int(mito.sum())} max_pct_mito={cfg.max_pct_mito}% mitochondrial counts or more"
    )
    adata = adata[~(too_many | mito)].copy()
    n_val = round(adata.n_obs * cfg.val_fraction)
    if adata.n_obs - n_val < 2 or adata.n_vars < 2:
        raise DataError(
            f"after QC only {adata.n_obs} cells x {adata.n_vars} genes remain, "
            f"{adata.n_obs - n_val} of them for training after the val_fraction="
            f"{cfg.val_fraction} split (need >= 2): {qc}; check the preprocess thresholds"
        )
    log.info("QC kept %d cells x %d genes: %s", adata.n_obs, adata.n_vars, qc)
    adata.layers[COUNTS_LAYER] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=cfg.target_sum)
    sc.pp.log1p(adata)
    n_top = min(cfg.n_top_genes, adata.n_vars)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat", batch_key=batch_key)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.obs[SPLIT_KEY] = split_labels(adata.n_obs, val_fraction=cfg.val_fraction, seed=seed)
    adata.obs[SPLIT_KEY] = adata.obs[SPLIT_KEY].astype("category")
    adata.uns.pop("log1p", None)
    adata.uns["preprocess"] = {"n_top_genes": n_top, "target_sum": cfg.target_sum}
    if batch_key is not None:
        adata.obs[batch_key] = adata.obs[batch_key].cat.remove_unused_categories()
        adata.uns["preprocess"]["batch_key"] = batch_key
    return adata
