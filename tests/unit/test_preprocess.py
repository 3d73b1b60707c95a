import numpy as np
import pytest

from src.app.config import PreprocessConfig
from src.app.core.data.preprocess import COUNTS_LAYER, SPLIT_KEY, preprocess, split_labels
from src.app.errors import DataError


def test_preprocess_shapes_layers_and_split(pre_adata, raw_adata):
    assert pre_adata.n_vars == 200
    assert pre_adata.n_obs <= raw_adata.n_obs
    counts = pre_adata.layers[COUNTS_LAYER].toarray()
    assert np.all(counts == np.round(counts))
    # log-normalised values: log1p of counts scaled to 1e4 per cell (over all genes before HVG)
    x = pre_adata.X.toarray()
    assert np.all(x >= 0)
    assert np.all((x > 0) == (counts > 0))
    assert set(pre_adata.obs[SPLIT_KEY]) == {"train", "val"}
    assert {"cell_type", "cell_type_coarse", "pct_counts_mt"} <= set(pre_adata.obs)


def test_qc_thresholds_filter_cells(raw_adata):
    adata = preprocess(raw_adata, PreprocessConfig(n_top_genes=100, max_genes=400), seed=0)
    assert adata.obs["n_genes_by_counts"].max() < 400
    assert adata.n_obs < raw_adata.n_obs


def test_qc_that_removes_everything_fails(raw_adata):
    with pytest.raises(DataError, match="after QC") as err:
        preprocess(raw_adata, PreprocessConfig(min_genes=100_000), seed=0)
    assert "min_genes=100000 genes: 300 cells" in str(err.value)
    assert "preprocess.max_removed_fraction=0.5" in str(err.value)


def test_split_is_deterministic_and_sized():
    a = split_labels(101, val_fraction=0.1, seed=3)
    b = split_labels(101, val_fraction=0.1, seed=3)
    c = split_labels(101, val_fraction=0.1, seed=4)
    assert (a == b).all()
    assert not (a == c).all()
    assert (a == "val").sum() == 10
