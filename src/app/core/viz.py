"""UMAP figures of the latent space. Reads results and draws; never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.app.config import VizConfig
from src.app.io_utils import atomic_path

UNLABELLED_COLOUR = "#d0d0d0"


def compute_umap(latent: np.ndarray, cfg: VizConfig, *, seed: int) -> np.ndarray:
    """2-D UMAP coordinates (cells, 2) of ``latent`` with scanpy (umap-learn underneath); seeded,
    so reruns give the same layout."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(
        obsm={"X_latent": np.asarray(latent, dtype=np.float32)}, shape=(len(latent), 0)
    )
    sc.pp.neighbors(
        adata,
        use_rep="X_latent",
        n_neighbors=min(cfg.n_neighbors, len(latent) - 1),
        method=cfg.neighbors_method,
        random_state=seed,
    )
    sc.tl.umap(adata, min_dist=cfg.min_dist, random_state=seed)
    return adata.obsm["X_umap"]


def category_colours(categories: list[str]) -> dict[str, str]:
    """One fixed colour per category (sorted order), so figures agree with each other."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab20" if len(categories) > 10 else "tab10"]
    return {c: mpl.colors.to_hex(cmap(i % cmap.N)) for i, c in enumerate(sorted(categories))}


def plot_embedding(
    coords: np.ndarray, panels: dict[str, pd.Series], out: str | Path, *, dpi: int
) -> None:
    """Scatter ``coords`` once per panel, coloured by that panel's labels; writes ``out`` (PNG).

    Unlabelled cells (NaN) are drawn grey underneath.
    """
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (title, labels) in zip(axes[0], panels.items(), strict=True):
        values = labels.astype("object").to_numpy()
        known = pd.notna(values)
        colours = category_colours([str(v) for v in pd.unique(values[known])])
        size = max(2.0, min(20.0, 30000 / max(len(values), 1)))
        ax.scatter(*coords[~known].T, s=size, c=UNLABELLED_COLOUR, label="unlabelled", lw=0)
        for cat, colour in colours.items():
            sel = known & (values.astype(str) == cat)
            ax.scatter(*coords[sel].T, s=size, c=colour, label=cat, lw=0)
        ax.set_title(title)
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=2)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
