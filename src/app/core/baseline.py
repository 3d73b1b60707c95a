"""The PCA baseline: the standard scanpy route to a representation, evaluated with the same
protocol as the VAE latent so every metrics.json shows the model against it."""

from __future__ import annotations

from typing import Any

import numpy as np

from src.app.config import BaselineConfig

SCALE_MAX = 10.0  # sc.pp.scale(max_value=10), as in scanpy's PBMC 3k tutorial


def pca_representation(expression: Any, cfg: BaselineConfig, *, seed: int) -> np.ndarray:
    """Principal components (cells, n_comps) of the log-normalised HVGs ``expression``.

    The computation of ``sc.pp.scale(max_value=10)`` (each gene centred, divided by its SD with
    ddof=1, clipped at 10) when ``cfg.scale``, then ``sc.tl.pca(svd_solver="arpack")`` (seeded),
    done with NumPy and scikit-learn so the evaluate stage does not import scanpy. Scaling holds
    a dense cells x genes float32 copy in memory. ``n_comps`` is capped at
    ``min(cells, genes) - 1``.
    """
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    if cfg.scale:
        matrix = expression.toarray() if sp.issparse(expression) else np.array(expression)
        matrix = matrix.astype(np.float32, copy=False)
        matrix -= matrix.mean(axis=0)
        sd = matrix.std(axis=0, ddof=1)
        matrix /= np.where(sd > 0, sd, 1.0)
        np.minimum(matrix, SCALE_MAX, out=matrix)
    else:
        matrix = expression.astype(np.float32) if sp.issparse(expression) else expression
    n_comps = max(1, min(cfg.n_comps, min(matrix.shape) - 1))
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=seed)
    return np.asarray(pca.fit_transform(matrix), dtype=np.float32)
