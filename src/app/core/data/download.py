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
from src.app.core.data.h5_guard import check_hdf5
from src.app.core.data.h5ad import check_unique, read_h5ad, reading
from src.app.errors import DataError, OutputError
from src.app.io_utils import atomic_path, disk_full

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
    """Read raw counts from a ``.h5ad``, a 10x mtx folder or a 10x ``.h5`` file.

    10x gene symbols repeat (Cell Ranger keeps one row per gene id), so those are made unique as
    scanpy does; an ``.h5ad`` must come with unique names (see :func:`check_raw_counts`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data source {path} does not exist; {OFFLINE_HINT}")
    if path.suffix == ".h5ad":
        return read_h5ad(path, what="data source")
    if not path.is_dir() and path.suffix != ".h5":
        raise DataError(
            f"data source {path}: unknown format; expected a .h5ad, a 10x mtx folder or .h5"
        )
    import scanpy as sc

    if not path.is_dir():
        check_hdf5(path, what="data source", expected="a complete 10x .h5 file")
    with reading(path, "data source", expected="a complete 10x mtx folder or .h5 file"):
        if path.is_dir():
            adata = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=True)
        else:
            adata = sc.read_10x_h5(path)
    adata.var_names_make_unique()
    return adata


def _value_counts(values: np.ndarray) -> dict[str, int]:
    """How many stored values are NaN/Inf, negative or not whole; a chunk at a time. O(values)."""
    found = {"NaN/Inf": 0, "negative": 0, "non-integer": 0}
    flat = values.reshape(-1)
    for start in range(0, flat.size, 1 << 24):
        chunk = flat[start : start + (1 << 24)]
        if not np.issubdtype(chunk.dtype, np.floating):
            found["negative"] += int((chunk < 0).sum())
            continue
        finite = np.isfinite(chunk)
        found["NaN/Inf"] += int((~finite).sum())
        found["negative"] += int((chunk[finite] < 0).sum())
        found["non-integer"] += int((chunk[finite] != np.round(chunk[finite])).sum())
    return found


def check_raw_counts(adata: ad.AnnData, *, where: str) -> None:
    """Refuse raw data no stage can use: an empty matrix, duplicated cell or gene names, NaN/Inf
    or negative values, or no counts at all. Non-integer values and cells or genes without
    counts are logged (QC removes the latter; count likelihoods refuse the former)."""
    import scipy.sparse as sp

    n_cells, n_genes = adata.shape
    if n_cells == 0 or n_genes == 0:
        raise DataError(f"{where} holds {n_cells} cells x {n_genes} genes; it is empty")
    check_unique(adata.obs_names, what="cell", where=where)
    check_unique(adata.var_names, what="gene", where=where)
    x = adata.X
    found = _value_counts(x.data if sp.issparse(x) else np.asarray(x))
    bad = [f"{n} {kind}" for kind, n in found.items() if n and kind != "non-integer"]
    if bad:
        raise DataError(
            f"{where} holds {' and '.join(bad)} values; raw counts must be finite and >= 0"
        )
    if found["non-integer"]:
        log.warning(
            "%s holds %d non-integer values: not raw counts? count likelihoods (nb, zinb, "
            "poisson) will refuse them",
            where,
            found["non-integer"],
        )
    per_cell = np.asarray(x.sum(axis=1)).ravel()
    if not per_cell.any():
        raise DataError(f"{where} holds no counts: every value is 0")
    per_gene = np.asarray(x.sum(axis=0)).ravel()
    if not per_cell.all() or not per_gene.all():
        log.info(
            "%s: %d cells and %d genes have no counts; QC (preprocess.min_genes, "
            "preprocess.min_cells) removes them",
            where,
            int((per_cell == 0).sum()),
            int((per_gene == 0).sum()),
        )


def join_labels(adata: ad.AnnData, labels_path: str | Path) -> None:
    """Join a barcode -> label table into ``adata.obs`` (columns the data lacks only).

    Writes ``adata.obs[<column>]`` for each label column; cells missing from the table get NaN.
    """
    import pandas as pd

    labels_path = Path(labels_path)
    if not labels_path.exists():
        raise DataError(f"label file {labels_path} (data.labels) does not exist")
    with reading(labels_path, "label file (data.labels)", expected="a CSV of barcode -> labels"):
        table = pd.read_csv(labels_path, index_col=0, comment="#")
    check_unique(table.index, what="cell", where=f"label file {labels_path}")
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
            if disk_full(exc):
                raise OutputError(
                    f"cannot unpack {tarball} into {cache_dir}: the file system is full"
                ) from None
            tarball.unlink(missing_ok=True)
            raise DataError(f"{tarball} is not a valid tarball ({exc}); it was removed") from None
        matrices = sorted(Path(tmp).rglob("matrix.mtx*"))
        if not matrices:
            raise DataError(f"{tarball} holds no 10x matrix.mtx")
        with reading(tarball, "PBMC 3k download", expected="the 10x PBMC 3k tarball"):
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
    """Raw counts for ``cfg.source`` with ``cfg.labels`` joined into ``.obs``, checked by
    :func:`check_raw_counts`."""
    if cfg.source == SOURCE_PBMC3K:
        adata = fetch_pbmc3k(cfg.url, resources_dir)
    else:
        adata = read_counts(cfg.source)
    check_raw_counts(adata, where=f"data source {cfg.source}")
    if cfg.labels is not None:
        join_labels(adata, cfg.labels)
    return adata
