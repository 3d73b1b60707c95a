"""A query data set put in the reference's terms: its genes aligned by name to a trained model's,
normalised with the reference's recipe (never with statistics fitted on the query), and the
reference re-preprocessed on the genes both share when the query lacks too many of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from src.app.config import PreprocessConfig
from src.app.core.data.preprocess import COUNTS_LAYER, SPLIT_KEY, batch_column, normalise_select
from src.app.errors import DataError

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

QUERY_BATCH = "_query_batch"  # the .obs column of the query's batch names (prefixed)
QUERY_PREFIX = "query:"  # query batch names never collide with the reference's


@dataclass(frozen=True)
class GenePlan:
    """How a query's genes meet a model's: ``model`` genes, of which ``present`` are in the
    query; ``shared`` the genes of the reference's raw data that the query also has."""

    model: tuple[str, ...]
    present: tuple[str, ...]
    shared: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        have = set(self.present)
        return [g for g in self.model if g not in have]

    @property
    def fraction(self) -> float:
        return len(self.present) / max(len(self.model), 1)

    def describe(self) -> dict:
        return {
            "model_genes": len(self.model),
            "present": len(self.present),
            "missing": len(self.model) - len(self.present),
            "shared_with_reference": len(self.shared),
        }


def plan_genes(
    model_genes: list[str], query_genes, reference_genes, *, min_shared: int, where: str
) -> GenePlan:
    """The gene plan of a query, failing with the numbers when the two data sets share fewer
    than ``min_shared`` genes (nothing to map on)."""
    query = set(map(str, query_genes))
    present = tuple(g for g in model_genes if g in query)
    shared = tuple(str(g) for g in reference_genes if str(g) in query)
    if len(shared) < min_shared:
        example = sorted(query)[:3]
        raise DataError(
            f"{where}: only {len(shared)} of its {len(query)} genes are among the reference's "
            f"{len(reference_genes)} (and {len(present)} of the model's {len(model_genes)}); "
            f"mapping needs at least map.min_shared_genes={min_shared}. Are the gene names of "
            f"the same kind (symbols vs Ensembl ids, species)? query genes e.g. {example}"
        )
    return GenePlan(model=tuple(model_genes), present=present, shared=shared)


def query_batches(obs: pd.DataFrame, batch_key: str | None, *, where: str) -> np.ndarray:
    """Each query cell's batch name, prefixed (cells,): ``batch_key``'s values, or one batch."""
    if batch_key is None:
        return np.full(len(obs), QUERY_PREFIX + "query", dtype=object)
    column = batch_column(obs, batch_key, where=where)
    return np.asarray([QUERY_PREFIX + str(v) for v in column], dtype=object)


def prepare_query(
    raw: ad.AnnData,
    genes: list[str],
    *,
    target_sum: float,
    library_genes: list[str] | None = None,
    where: str,
) -> ad.AnnData:
    """The query as the model reads it: ``genes`` in that order (a gene the query lacks is all
    zeros), log-normalised values in ``.X`` and raw counts in ``.layers["counts"]``.

    Each cell is normalised to ``target_sum`` over ``library_genes`` (None: all the query's
    genes), as the reference's cells were over theirs. A cell without counts there fails.
    """
    import anndata as ad
    import scipy.sparse as sp
    from anndata.utils import make_index_unique

    counts = sp.csr_matrix(raw.X, dtype=np.float32)
    cols = make_index_unique(pd.Index(raw.var_names.astype(str)))
    obs = raw.obs.copy()
    obs.index = make_index_unique(pd.Index(raw.obs_names.astype(str)))
    lib_cols = np.arange(len(cols)) if library_genes is None else cols.get_indexer(library_genes)
    lib_cols = lib_cols[lib_cols >= 0]
    totals = np.asarray(counts[:, lib_cols].sum(1)).ravel()
    empty = int((totals <= 0).sum())
    if empty:
        first = str(obs.index[np.flatnonzero(totals <= 0)[0]])
        raise DataError(
            f"{where}: {empty} cells have no counts in the {len(lib_cols)} genes used for "
            f"normalisation (e.g. '{first}'); remove empty cells before mapping"
        )
    at = cols.get_indexer(genes)
    picked = counts[:, np.where(at >= 0, at, 0)].tocsc()
    picked = picked @ sp.diags((at >= 0).astype(np.float32))  # missing genes -> zeros
    picked = sp.csr_matrix(picked)
    scale = sp.diags((target_sum / totals).astype(np.float32))
    logged = (scale @ picked).tocsr()
    logged.data = np.log1p(logged.data)
    out = ad.AnnData(X=logged, obs=obs, var=pd.DataFrame(index=list(genes)))
    out.layers[COUNTS_LAYER] = picked
    return out


def shared_reference(
    raw: ad.AnnData,
    reference_obs: pd.DataFrame,
    genes: tuple[str, ...],
    cfg: PreprocessConfig,
    *,
    seed: int,
    batch_key: str | None,
    where: str,
) -> ad.AnnData:
    """The reference re-preprocessed on ``genes`` (those a query shares): the cells the
    reference's QC kept (``reference_obs``, the preprocessed data's .obs, whose columns and
    train/val split it keeps), normalised over ``genes`` only, HVGs chosen among them."""
    missing = reference_obs.index.difference(raw.obs_names)
    if len(missing):
        raise DataError(
            f"{where}: {len(missing)} cells of the preprocessed reference are not in its raw "
            f"data (e.g. '{missing[0]}'); rerun the reference's preprocess stage"
        )
    adata = raw[reference_obs.index, list(genes)].copy()
    adata.obs = reference_obs.copy()
    expressed = np.asarray((adata.X > 0).sum(0)).ravel() >= cfg.min_cells
    adata = adata[:, expressed].copy()
    split = reference_obs[SPLIT_KEY].to_numpy() if SPLIT_KEY in reference_obs else None
    if batch_key is not None:
        adata.obs[batch_key] = batch_column(adata.obs, batch_key, where=where)
    empty = np.asarray(adata.X.sum(1)).ravel() <= 0
    if empty.any():
        log.warning("%d reference cells have no counts in the shared genes; left out", empty.sum())
        adata, split = adata[~empty].copy(), None if split is None else split[~empty]
    return normalise_select(adata, cfg, seed=seed, batch_key=batch_key, split=split)
