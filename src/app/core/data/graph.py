"""The kNN graph of a representation and label spreading over it: used by training (pseudo-labels
for the classifier head) and by evaluation (label propagation). Pure NumPy / SciPy / scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# label spreading (Zhou et al. 2004): F <- alpha * S F + (1 - alpha) * Y until it settles
PROPAGATION_ALPHA = 0.9
PROPAGATION_MAX_ITER = 200
PROPAGATION_TOL = 1e-6


def nearest_neighbours(rep: np.ndarray, *, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances (cells, k) of each cell's ``n_neighbors`` nearest other
    cells (self excluded; k capped at cells - 1), nearest first: the one neighbour search of a
    representation, sliced by every graph built on it. O(n k log n) with a tree index."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(n_neighbors, len(rep) - 1))
    dist, idx = NearestNeighbors(n_neighbors=k).fit(rep).kneighbors()
    return idx, dist


def knn_graph(
    rep: np.ndarray | None, *, n_neighbors: int, neighbours: np.ndarray | None = None
) -> Any:
    """Symmetric, degree-normalised kNN graph ``D^-1/2 W D^-1/2`` (sparse, cells x cells) with
    ``W`` the union of each cell's ``n_neighbors`` nearest neighbours (self excluded), from
    ``neighbours`` (the indices of :func:`nearest_neighbours`, at least ``n_neighbors`` columns)
    when given, else searched in ``rep``. O(n k) memory."""
    import scipy.sparse as sp

    if neighbours is None:
        neighbours, _ = nearest_neighbours(rep, n_neighbors=n_neighbors)
    idx = neighbours[:, : max(1, min(n_neighbors, neighbours.shape[1]))]
    n, k = idx.shape
    adj = sp.csr_matrix((np.ones(idx.size), idx.ravel(), np.arange(0, idx.size + 1, k)), (n, n))
    adj = adj.maximum(adj.T).tocsr()
    inv_sqrt = 1.0 / np.sqrt(np.asarray(adj.sum(axis=1)).ravel())
    return sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)


def spread(graph: Any, seeds: np.ndarray) -> np.ndarray:
    """Label spreading of the one-hot ``seeds`` (cells, classes) over ``graph``: unnormalised
    class mass per cell, 0 where the graph connects a cell to no seed.
    O(iterations * edges * n_classes), iterations <= PROPAGATION_MAX_ITER."""
    spread = seeds.copy()
    for _ in range(PROPAGATION_MAX_ITER):
        nxt = PROPAGATION_ALPHA * (graph @ spread) + (1 - PROPAGATION_ALPHA) * seeds
        done = np.abs(nxt - spread).max() <= PROPAGATION_TOL * max(nxt.max(), 1e-12)
        spread = nxt
        if done:
            break
    return spread


def seeds_of(codes: np.ndarray, train: np.ndarray, n_classes: int) -> np.ndarray:
    seeds = np.zeros((len(codes), n_classes))
    seeds[np.flatnonzero(train), codes[train]] = 1.0
    return seeds


def normalised(spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities from the spread class mass, and which cells any seed reached (the
    others keep all-zero rows)."""
    mass = spread.sum(axis=1)
    reached = mass > 0
    return spread / np.where(reached, mass, 1.0)[:, None], reached
