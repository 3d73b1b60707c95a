"""Small synthetic count data: a negative-binomial mixture of cell types with marker genes.

Used by ``--dry_run`` and the tests. Cells pass the default QC (200-2500 genes, < 5 % mito).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import anndata as ad

FINE_TO_COARSE = {"T naive": "T", "T memory": "T", "B": "B", "Mono": "Mono", "NK": "NK"}


def synthetic_counts(
    *,
    n_cells: int = 400,
    n_genes: int = 1000,
    n_mito: int = 10,
    unlabelled_fraction: float = 0.1,
    seed: int = 0,
) -> ad.AnnData:
    """NB counts for ``len(FINE_TO_COARSE)`` cell types; labels in ``obs['cell_type']`` and
    ``obs['cell_type_coarse']`` with NaN for an ``unlabelled_fraction`` of cells."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    types = list(FINE_TO_COARSE)
    n_types = len(types)
    base = rng.lognormal(mean=-0.5, sigma=1.2, size=n_genes)  # mean expression per gene
    base[:n_mito] = 0.5
    profiles = np.tile(base, (n_types, 1))
    markers = rng.choice(np.arange(n_mito, n_genes), size=(n_types, 30), replace=False)
    for t in range(n_types):
        profiles[t, markers[t]] *= rng.uniform(4, 12, size=markers.shape[1])
    which = rng.integers(0, n_types, size=n_cells)
    size_factor = rng.lognormal(mean=0.0, sigma=0.3, size=n_cells)[:, None]
    mu = profiles[which] * size_factor
    theta = 5.0
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)

    genes = [f"MT-{i}" for i in range(n_mito)] + [f"GENE{i}" for i in range(n_mito, n_genes)]
    fine = np.array(types, dtype=object)[which]
    coarse = np.array([FINE_TO_COARSE[t] for t in fine], dtype=object)
    hidden = rng.random(n_cells) < unlabelled_fraction
    fine[hidden] = np.nan
    coarse[hidden] = np.nan
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(fine, categories=types),
            "cell_type_coarse": pd.Categorical(
                coarse, categories=sorted(set(FINE_TO_COARSE.values()))
            ),
        },
        index=[f"CELL{i:05d}-1" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
