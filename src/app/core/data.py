"""Acquire raw counts: the PBMC 3k download (verified by content fingerprint) or a local file.

This is the download stage's core. It returns an AnnData of raw counts with any label table joined
into ``.obs``; it never preprocesses.
"""

from __future__ import annotations

import logging
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from src.app.config import SOURCE_PBMC3K, DataConfig
from src.app.errors import DataError
from src.app.io_utils import atomic_path

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

TARBALL_NAME = "pbmc3k_filtered_gene_bc_matrices.tar.gz"
OFFLINE_HINT = (
    "point data.source at a local copy instead, e.g. "
    "APP__DATA__SOURCE=../shared/data/pbmc3k/pbmc3k_raw.h5ad "
    "(a .h5ad, a 10x mtx folder or a 10x .h5 file)"
)


@dataclass(frozen=True)
class Fingerprint:
    """Content fingerprint of a count matrix: survives re-encoding, catches a different matrix."""

    n_cells: int
    n_genes: int
    nnz: int
    total_counts: int


PBMC3K_FINGERPRINT = Fingerprint(n_cells=2700, n_genes=32738, nnz=2286884, total_counts=6390631)


def fingerprint(adata: ad.AnnData) -> Fingerprint:
    import scipy.sparse as sp

    x = adata.X
    nnz = int(x.count_nonzero()) if sp.issparse(x) else int(np.count_nonzero(x))
    return Fingerprint(
        n_cells=int(adata.n_obs),
        n_genes=int(adata.n_vars),
        nnz=nnz,
        total_counts=round(float(x.sum(dtype=np.float64))),
    )


def source_name(source: str) -> str:
    """File-name-safe name of a data source: 'pbmc3k' or the stem of a local path."""
    if source == SOURCE_PBMC3K:
        return SOURCE_PBMC3K
    stem = Path(source.rstrip("/")).name
    for suffix in (".h5ad", ".h5"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "data"


def read_counts(path: str | Path) -> ad.AnnData:
    """Read raw counts from a ``.h5ad``, a 10x mtx folder or a 10x ``.h5`` file."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"data source {path} does not exist; {OFFLINE_HINT}")
    try:
        if path.is_dir():
            import scanpy as sc

            adata = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=True)
        elif path.suffix == ".h5ad":
            adata = ad.read_h5ad(path)
        elif path.suffix == ".h5":
            import scanpy as sc

            adata = sc.read_10x_h5(path)
        else:
            raise DataError(
                f"data source {path}: unknown format; expected a .h5ad, a 10x mtx folder or .h5"
            )
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"data source {path} could not be read: {exc}") from None
    adata.var_names_make_unique()
    return adata


def join_labels(adata: ad.AnnData, labels_path: str | Path) -> None:
    """Join a barcode -> label table into ``adata.obs`` (columns the data lacks only).

    Writes ``adata.obs[<column>]`` for each label column; cells missing from the table get NaN.
    """
    import pandas as pd

    labels_path = Path(labels_path)
    if not labels_path.exists():
        raise DataError(f"label file {labels_path} (data.labels) does not exist")
    table = pd.read_csv(labels_path, index_col=0, comment="#")
    new_cols = [c for c in table.columns if c not in adata.obs.columns]
    if not new_cols:
        return
    overlap = adata.obs_names.isin(table.index).sum()
    if overlap == 0:
        log.warning(
            "label file %s shares no barcodes with the data; labels stay empty", labels_path
        )
    for col in new_cols:
        values = table[col].reindex(adata.obs_names)
        adata.obs[col] = values.astype("category") if values.dtype == object else values.to_numpy()


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,  # noqa: S310
            atomic_path(dest) as tmp,
            tmp.open("wb") as fh,
        ):
            shutil.copyfileobj(response, fh)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download PBMC 3k from {url} ({reason}); {OFFLINE_HINT}"
        ) from None


def fetch_pbmc3k(
    url: str,
    cache_dir: str | Path,
    *,
    expected: Fingerprint = PBMC3K_FINGERPRINT,
    timeout: float = 60.0,
) -> ad.AnnData:
    """Download (once) and read the 10x PBMC 3k tarball, then verify its content fingerprint.

    Writes ``cache_dir/pbmc3k_filtered_gene_bc_matrices.tar.gz``.
    """
    import scanpy as sc

    cache_dir = Path(cache_dir)
    tarball = cache_dir / TARBALL_NAME
    if not tarball.exists():
        log.info("downloading %s", url)
        _download(url, tarball, timeout)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            tarball.unlink(missing_ok=True)
            raise DataError(f"{tarball} is not a valid tarball ({exc}); it was removed") from None
        matrices = sorted(Path(tmp).rglob("matrix.mtx*"))
        if not matrices:
            raise DataError(f"{tarball} holds no 10x matrix.mtx")
        adata = sc.read_10x_mtx(matrices[0].parent, var_names="gene_symbols", make_unique=True)
    got = fingerprint(adata)
    if got != expected:
        tarball.unlink(missing_ok=True)
        raise DataError(
            f"PBMC 3k from {url} does not match its content fingerprint: expected {expected}, "
            f"got {got}; the download was removed"
        )
    return adata


def acquire(cfg: DataConfig, *, resources_dir: str | Path) -> ad.AnnData:
    """Raw counts for ``cfg.source`` with ``cfg.labels`` joined into ``.obs``."""
    if cfg.source == SOURCE_PBMC3K:
        adata = fetch_pbmc3k(cfg.url, resources_dir)
    else:
        adata = read_counts(cfg.source)
    if cfg.labels is not None:
        join_labels(adata, cfg.labels)
    return adata
