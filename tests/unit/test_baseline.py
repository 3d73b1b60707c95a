import numpy as np
import scipy.sparse as sp

from src.app.config import BaselineConfig
from src.app.core.evaluate.baseline import pca_representation


def counts(seed=0):
    rng = np.random.default_rng(seed)
    x = np.log1p(rng.poisson(rng.gamma(1.0, 2.0, size=(1, 40)), size=(120, 40))).astype(np.float32)
    x[:, 3] = 0  # a constant gene is left at 0, as scanpy does
    return x


def test_pca_baseline_is_scanpys_route():
    import anndata as ad
    import scanpy as sc

    x = counts()
    before = x.copy()
    ours = pca_representation(x, BaselineConfig(n_comps=5), seed=0)
    np.testing.assert_array_equal(x, before)  # the input is not scaled in place
    adata = ad.AnnData(x.copy())
    sc.pp.scale(adata, max_value=10)
    sc.tl.pca(adata, n_comps=5, svd_solver="arpack", random_state=0)
    # the same components up to sign
    np.testing.assert_allclose(np.abs(ours), np.abs(adata.obsm["X_pca"]), atol=1e-3)


def test_sparse_and_dense_input_agree_with_and_without_scaling():
    x = counts(1)
    for scale in (True, False):
        cfg = BaselineConfig(n_comps=4, scale=scale)
        dense = pca_representation(x, cfg, seed=0)
        sparse = pca_representation(sp.csr_matrix(x), cfg, seed=0)
        np.testing.assert_allclose(np.abs(sparse), np.abs(dense), atol=1e-4)


def test_components_are_capped_by_the_data():
    x = np.random.default_rng(0).normal(size=(6, 4))
    assert pca_representation(x, BaselineConfig(n_comps=50), seed=0).shape == (6, 3)


def test_blockwise_pca_matches_the_dense_route_without_the_dense_copy():
    """Over the memory limit the scaled PCA is built from row blocks: the same components up to
    sign, for sparse and dense input."""
    x = counts(2)
    x[0, 7] = 1000.0  # one outlier: about 10.9 sd after scaling, so clipped at 10
    cfg = BaselineConfig(n_comps=4)
    dense = pca_representation(x, cfg, seed=0)
    small = 4 * 40 * 16  # a few rows per block
    for data in (x, sp.csr_matrix(x)):
        blockwise = pca_representation(data, cfg, seed=0, max_bytes=small)
        np.testing.assert_allclose(np.abs(blockwise), np.abs(dense), atol=1e-3)
    assert pca_representation(x, cfg, seed=0, max_bytes=1e9).shape == dense.shape


def test_constant_data_gives_zero_components_instead_of_an_arpack_error():
    x = np.ones((8, 5), dtype=np.float32)
    rep = pca_representation(x, BaselineConfig(n_comps=3), seed=0)
    assert rep.shape == (8, 3)
    np.testing.assert_allclose(rep, 0.0, atol=1e-6)
