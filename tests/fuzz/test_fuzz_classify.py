"""Hypothesis on the label-transfer kernels: pseudo-labels from label spreading on any point
cloud and any label pattern, and the blockwise PCA baseline on any block size."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from src.app.config import BaselineConfig
from src.app.core.evaluate.baseline import pca_representation
from src.app.core.model.pseudo_labels import pseudo_labels
from tests.examples import examples

finite = st.floats(-50, 50, allow_nan=False, width=32)
# log-normalised expression: zeros and values on a count-like grid (no subnormal spreads, where
# the float32 dense route and the float64 blockwise one legitimately differ)
expression = st.one_of(st.just(0.0), st.integers(1, 500).map(lambda v: v / 100))


@st.composite
def labelled_clouds(draw):
    n = draw(st.integers(2, 40))
    n_classes = draw(st.integers(2, 5))
    points = draw(arrays(np.float32, (n, draw(st.integers(1, 4))), elements=finite))
    codes = draw(arrays(np.int64, n, elements=st.integers(-1, n_classes - 1)))
    return points, codes, n_classes


@settings(max_examples=examples(60), deadline=None)
@given(cloud=labelled_clouds(), k=st.integers(1, 12))
def test_pseudo_labels_are_valid_classes_with_weights_in_range(cloud, k):
    points, codes, n_classes = cloud
    pseudo, weights = pseudo_labels(points, codes, n_classes, n_neighbors=k)
    assert pseudo.shape == weights.shape == codes.shape
    assert ((pseudo >= 0) & (pseudo < n_classes)).all()
    assert np.isfinite(weights).all()
    assert ((weights >= 0) & (weights <= 1)).all()
    assert (weights[codes >= 0] == 0).all()  # labelled cells keep their own label
    if (codes < 0).all():
        assert (weights == 0).all()  # nothing to spread


@settings(max_examples=examples(30), deadline=None)
@given(
    x=arrays(np.float32, st.tuples(st.integers(4, 30), st.integers(3, 8)), elements=expression),
    rows=st.integers(1, 40),
)
def test_blockwise_pca_keeps_the_dense_routes_distances(x, rows):
    """Any block size gives the same principal subspace as the dense route: the distances
    between cells in the full-rank PCA space agree (components themselves can rotate where
    eigenvalues tie)."""
    cfg = BaselineConfig(n_comps=50)  # capped at min(cells, genes) - 1
    dense = pca_representation(x, cfg, seed=0)
    blockwise = pca_representation(x, cfg, seed=0, max_bytes=16 * x.shape[1] * rows)
    assert blockwise.shape == dense.shape
    assert np.isfinite(blockwise).all()
    scale = max(1.0, float(np.abs(dense).max()))
    gram = lambda r: r @ r.T  # noqa: E731
    np.testing.assert_allclose(gram(blockwise), gram(dense), atol=2e-3 * scale**2)


@settings(max_examples=examples(60), deadline=None)
@given(cloud=labelled_clouds(), k=st.integers(1, 14))
def test_umap_graph_is_a_symmetric_fuzzy_union_on_any_cloud(cloud, k):
    """The UMAP membership graph from any neighbours (duplicates and ties included): finite
    weights in (0, 1], symmetric, every cell joined to its nearest neighbour with weight 1, and
    sigmas for which each cell's memberships sum to log2(k + 1) where the search converged."""
    from src.app.core.data.graph import nearest_neighbours
    from src.app.core.evaluate.umap import _sigmas, fuzzy_graph

    points, _, _ = cloud
    idx, dist = nearest_neighbours(points.astype(np.float64), n_neighbors=k)
    graph, distances = fuzzy_graph(idx, dist)
    weights = graph.toarray()
    assert np.isfinite(weights).all()
    assert ((weights >= 0) & (weights <= 1 + 1e-6)).all()
    np.testing.assert_allclose(weights, weights.T, atol=1e-6)
    rows = np.arange(len(points))
    assert (weights[rows, idx[:, 0]] >= 1 - 1e-6).all()
    assert distances.shape == graph.shape
    rho, sigma = _sigmas(dist)
    assert (sigma > 0).all()
    assert (rho >= 0).all()
