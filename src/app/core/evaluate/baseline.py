"""The PCA baseline: the standard scanpy route to a representation, evaluated with the same
protocol as the VAE latent so every metrics.json shows the model against it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from src.app.config import BaselineConfig
from src.app.core.data.preprocess import SCALE_MAX


def pca_representation(
    expression: Any, cfg: BaselineConfig, *, seed: int, max_bytes: float | None = None
) -> np.ndarray:
    """Principal components (cells, n_comps) of the log-normalised HVGs ``expression``.

    The computation of ``sc.pp.scale(max_value=10)`` (each gene centred, divided by its SD with
    ddof=1, clipped at 10) when ``cfg.scale``, then ``sc.tl.pca(svd_solver="arpack")`` (seeded),
    done with NumPy and scikit-learn so the evaluate stage does not import scanpy. Scaling holds
    a dense cells x genes float32 copy in memory; where that copy would pass ``max_bytes`` (half
    of ``max_ram_usage_gb`` in the stages) the same components come from the gene covariance
    accumulated over row blocks instead (:func:`_blockwise_scaled_pca`). ``n_comps`` is capped
    at ``min(cells, genes) - 1``.
    """
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    n_comps = max(1, min(cfg.n_comps, min(expression.shape) - 1))
    dense_bytes = 4 * expression.shape[0] * expression.shape[1]
    if cfg.scale and max_bytes is not None and dense_bytes > max_bytes:
        return _blockwise_scaled_pca(expression, n_comps, max_bytes=max_bytes)
    if cfg.scale:
        matrix = expression.toarray() if sp.issparse(expression) else np.array(expression)
        matrix = matrix.astype(np.float32, copy=False)
        matrix -= matrix.mean(axis=0)
        sd = matrix.std(axis=0, ddof=1)
        matrix /= np.where(sd > 0, sd, 1.0)
        np.minimum(matrix, SCALE_MAX, out=matrix)
    else:
        matrix = expression.astype(np.float32) if sp.issparse(expression) else expression
    from scipy.sparse.linalg import ArpackError

    try:
        scores = PCA(n_components=n_comps, svd_solver="arpack", random_state=seed).fit_transform(
            matrix
        )
    except ArpackError:  # no variance to iterate on (e.g. constant data): the exact SVD copes
        with np.errstate(invalid="ignore", divide="ignore"):  # explained-variance ratio 0 / 0
            scores = PCA(n_components=n_comps, svd_solver="full").fit_transform(
                matrix.toarray() if sp.issparse(matrix) else matrix
            )
    return np.asarray(scores, dtype=np.float32)


def _blockwise_scaled_pca(expression: Any, n_comps: int, *, max_bytes: float) -> np.ndarray:
    """The scaled PCA of :func:`pca_representation` without the dense copy: three passes over
    row blocks of ``expression`` (gene moments; the clipped values' sums and cross-products;
    the scores), then an eigendecomposition of the genes x genes covariance. Exact up to the
    sign of each component and float rounding. O(cells x genes^2) time, O(genes^2 + block x
    genes) memory."""
    import scipy.sparse as sp

    n_cells, n_genes = expression.shape
    rows = int(max(1, min(n_cells, max_bytes // (16 * n_genes))))  # float64 block, with a copy

    def blocks():
        for start in range(0, n_cells, rows):
            part = expression[start : start + rows]
            yield np.asarray(part.toarray() if sp.issparse(part) else part, dtype=np.float64)

    total, squares = np.zeros(n_genes), np.zeros(n_genes)
    for part in blocks():
        total += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
    mean = total / n_cells
    sd = np.sqrt(np.maximum(squares - n_cells * mean**2, 0.0) / max(n_cells - 1, 1))
    sd = np.where(sd > 0, sd, 1.0)

    def scaled():
        for part in blocks():
            yield np.minimum((part - mean) / sd, SCALE_MAX)

    clipped_sum, cross = np.zeros(n_genes), np.zeros((n_genes, n_genes))
    for part in scaled():
        clipped_sum += part.sum(axis=0)
        cross += part.T @ part
    centre = clipped_sum / n_cells
    cov = (cross - n_cells * np.outer(centre, centre)) / max(n_cells - 1, 1)
    _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    top = vectors[:, ::-1][:, :n_comps]
    scores = [(part - centre) @ top for part in scaled()]
    return np.concatenate(scores).astype(np.float32)


def harmony(pca: np.ndarray, batches: np.ndarray, *, seed: int) -> np.ndarray:
    """Harmony (Korsunsky et al. 2019) of the principal components ``pca`` (cells, n_comps) over
    the batch of each cell: harmonypy's ``run_harmony`` with its defaults, the route of
    ``sc.external.pp.harmony_integrate``, seeded (its result is the same for any thread count).
    Returns the corrected components (cells, n_comps), float32; the input itself with fewer
    than 2 batches. harmonypy 2.1 takes cells x PCs or PCs x cells (it checks which dimension is
    the cells, columns first) and returns ``Z_corr`` as cells x PCs (before 2.0: PCs x cells, so
    scanpy transposed it); PCs x cells are passed here so a square input is not misread."""
    import harmonypy

    pca = np.asarray(pca)
    codes, names = pd.factorize(np.asarray(batches, dtype=object).astype(str), sort=True)
    if len(names) < 2:
        return pca.astype(np.float32)
    out = harmonypy.run_harmony(
        np.ascontiguousarray(pca.T, dtype=np.float64),
        {"batch": codes},
        "batch",
        random_state=seed,
        verbose=False,
    )
    corrected = np.asarray(out.Z_corr)
    if corrected.shape != pca.shape:  # harmonypy < 2.0: PCs x cells
        corrected = corrected.T
    return corrected.astype(np.float32)
