"""The UMAP of the latent, as ``sc.pp.neighbors`` + ``sc.tl.umap`` compute it, stored under
scanpy's names so ``sc.pl.umap`` finds it in annotated.h5ad.

The layout is umap-learn's own (``simplicial_set_embedding``, as scanpy calls it). The neighbour
graph (UMAP's fuzzy simplicial set) is built here in NumPy from the evaluate stage's one
neighbour search, for two reasons: that search is then shared with label propagation instead of
run again, and umap-learn's graph code is numba that is compiled afresh in every process (about
6 s per evaluate job on 2 cores, against milliseconds here). It follows umap-learn 0.5's
``smooth_knn_dist`` and ``compute_membership_strengths`` (local_connectivity 1, bandwidth 1, set_op_mix_ratio 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from src.app.config import VizConfig

SMOOTH_K_TOLERANCE = 1e-5  # umap-learn's constants
MIN_K_DIST_SCALE = 1e-3
SIGMA_SEARCH_STEPS = 64


def _sigmas(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell ``rho`` (distance to the nearest other cell) and the ``sigma`` at which its
    neighbours' memberships sum to log2(k + 1), by bisection on all cells at once.
    ``dist`` (cells, k) excludes self. O(SIGMA_SEARCH_STEPS x cells x k)."""
    n, k = dist.shape
    target = np.log2(k + 1)  # umap-learn counts the cell itself among its neighbours
    positive = np.where(dist > 0, dist, np.inf)
    rho = positive.min(axis=1)
    rho = np.where(np.isfinite(rho), rho, 0.0)
    lo, hi, mid = np.zeros(n), np.full(n, np.inf), np.ones(n)
    active = np.ones(n, dtype=bool)
    shifted = np.maximum(dist - rho[:, None], 0.0)  # a neighbour within rho counts 1
    for _ in range(SIGMA_SEARCH_STEPS):
        psum = np.exp(-shifted / mid[:, None]).sum(axis=1)
        active &= np.abs(psum - target) >= SMOOTH_K_TOLERANCE
        if not active.any():
            break
        over = active & (psum > target)
        under = active & ~over
        hi = np.where(over, mid, hi)
        lo = np.where(under, mid, lo)
        mid = np.where(over | (under & np.isfinite(hi)), (lo + hi) / 2, mid)
        mid = np.where(under & ~np.isfinite(hi), mid * 2, mid)
    # mean over each cell's distances with self (0) included, as umap-learn's arrays hold it
    mean_ith = dist.sum(axis=1) / (k + 1)
    floor = np.where(rho > 0, mean_ith, dist.sum() / (n * (k + 1)))
    return rho, np.maximum(mid, MIN_K_DIST_SCALE * floor)


def fuzzy_graph(idx: np.ndarray, dist: np.ndarray) -> tuple[Any, Any]:
    """UMAP's symmetric membership graph (``obsp["connectivities"]``) and the kNN distances
    (``obsp["distances"]``), both CSR cells x cells, from each cell's neighbours (self excluded)."""
    import scipy.sparse as sp

    n, k = idx.shape
    rho, sigma = _sigmas(dist)
    weights = np.exp(-np.maximum(dist - rho[:, None], 0.0) / sigma[:, None])
    rows = np.repeat(np.arange(n), k)
    member = sp.csr_matrix((weights.ravel(), (rows, idx.ravel())), shape=(n, n))
    both = member.multiply(member.T)
    graph = (member + member.T - both).tocsr()
    graph.eliminate_zeros()
    distances = sp.csr_matrix((dist.ravel(), (rows, idx.ravel())), shape=(n, n))
    return graph.astype(np.float32), distances.astype(np.float32)


@contextlib.contextmanager
def _cached_layout_epoch() -> Iterator[None]:
    """umap-learn's layout epoch compiled with numba's on-disk cache while the block runs:
    umap-learn's own copy of that function is compiled afresh in every process (0.6 to 1 s on 2
    cores, each evaluate job), this one once per installation. The same Python function and
    numba options (fastmath, serial), so the same layout; umap-learn's module global is
    restored on exit."""
    import numba
    from umap import layouts

    name = "_nb_optimize_layout_euclidean_single_epoch"
    own = getattr(layouts, name)
    cached = numba.njit(own.py_func, fastmath=True, parallel=False, cache=True)
    setattr(layouts, name, cached)
    try:
        yield
    finally:
        setattr(layouts, name, own)


def umap_layout(latent: np.ndarray, graph: Any, *, a: float, b: float, seed: int) -> np.ndarray:
    """2-D UMAP coordinates (cells, 2) of ``latent`` from its membership ``graph`` and the curve
    parameters ``a``, ``b``, seeded, with spectral initialisation and umap-learn's default epochs
    (500 up to 10,000 cells, else 200)."""
    from sklearn.utils import check_random_state
    from umap.umap_ import simplicial_set_embedding

    with _cached_layout_epoch():
        coords, _ = simplicial_set_embedding(
            data=latent,
            graph=graph.tocoo(),  # a copy: umap-learn prunes its weights in place
            n_components=2,
            initial_alpha=1.0,
            a=a,
            b=b,
            gamma=1.0,
            negative_sample_rate=5,
            n_epochs=None,
            init="spectral",
            random_state=check_random_state(seed),
            metric="euclidean",
            metric_kwds={},
            densmap=False,
            densmap_kwds={},
            output_dens=False,
        )
    return np.asarray(coords, dtype=np.float32)


def umap_entries(
    latent: np.ndarray, idx: np.ndarray, dist: np.ndarray, cfg: VizConfig, *, seed: int,
    use_rep: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:  # fmt: skip
    """``(obsm, obsp, uns)`` entries of the UMAP as scanpy writes them: ``X_umap``; the
    ``connectivities`` and ``distances`` of ``cfg.n_neighbors`` neighbours (self counted, as in
    scanpy); ``neighbors`` and ``umap`` parameters. ``idx`` / ``dist``: the latent's neighbours
    (self excluded, at least ``cfg.n_neighbors - 1`` columns)."""
    k = max(1, min(cfg.n_neighbors - 1, idx.shape[1]))
    from umap.umap_ import find_ab_params

    graph, distances = fuzzy_graph(idx[:, :k], dist[:, :k])
    a, b = find_ab_params(1.0, cfg.min_dist)
    coords = umap_layout(latent, graph, a=a, b=b, seed=seed)
    neighbors = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {
            "n_neighbors": k + 1,
            "method": "umap",
            "random_state": seed,
            "use_rep": use_rep,
        },
    }
    uns = {"neighbors": neighbors, "umap": {"params": {"a": float(a), "b": float(b)}}}
    return {"X_umap": coords}, {"connectivities": graph, "distances": distances}, uns
