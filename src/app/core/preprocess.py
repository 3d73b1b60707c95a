"""Preprocess raw counts with scanpy as in its PBMC 3k tutorial; the preprocess stage's core."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from src.app.config import PreprocessConfig
from src.app.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

COUNTS_LAYER = "counts"
SPLIT_KEY = "split"


def split_labels(n_cells: int, *, val_fraction: float, seed: int) -> np.ndarray:
    """Deterministic train/val assignment: a seeded permutation, the first share is 'val'."""
    n_val = round(n_cells * val_fraction)
    order = np.random.default_rng(seed).permutation(n_cells)
    split = np.full(n_cells, "train", dtype=object)
    split[order[:n_val]] = "val"
    return split


def preprocess(adata: ad.AnnData, cfg: PreprocessConfig, *, seed: int) -> ad.AnnData:
    """QC, normalise, log1p and select highly variable genes.

    Returns a new AnnData of the kept cells and HVGs with log-normalised values in ``.X``, raw
    counts in ``.layers["counts"]``, QC metrics and ``obs["split"]`` ('train'/'val').
    """
    import scanpy as sc

    adata = adata.copy()
    adata.obs_names_make_unique()
    sc.pp.filter_cells(adata, min_genes=cfg.min_genes)
    sc.pp.filter_genes(adata, min_cells=cfg.min_cells)
    adata.var["mt"] = adata.var_names.str.upper().str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    keep = (adata.obs["n_genes_by_counts"] < cfg.max_genes) & (
        adata.obs["pct_counts_mt"] < cfg.max_pct_mito
    )
    adata = adata[keep.to_numpy()].copy()
    if adata.n_obs < 2 or adata.n_vars < 2:
        raise DataError(
            f"after QC only {adata.n_obs} cells x {adata.n_vars} genes remain; "
            "check the preprocess thresholds (min_genes, max_genes, max_pct_mito, min_cells)"
        )
    adata.layers[COUNTS_LAYER] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=cfg.target_sum)
    sc.pp.log1p(adata)
    n_top = min(cfg.n_top_genes, adata.n_vars)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat")
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.obs[SPLIT_KEY] = split_labels(adata.n_obs, val_fraction=cfg.val_fraction, seed=seed)
    adata.obs[SPLIT_KEY] = adata.obs[SPLIT_KEY].astype("category")
    adata.uns.pop("log1p", None)
    adata.uns["preprocess"] = {"n_top_genes": n_top, "target_sum": cfg.target_sum}
    return adata
