"""The only place that turns AnnData into tensors: in-memory splits on the device, minibatches by
a seeded permutation each epoch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from src.app.config import Config
from src.app.core.preprocess import SPLIT_KEY
from src.app.errors import DataError
from src.app.machine import Runtime

if TYPE_CHECKING:
    import anndata as ad


@dataclass(frozen=True)
class Batch:
    """One minibatch; ``x`` is the model input (log-normalised expression), shape (cells, genes)."""

    x: torch.Tensor


def to_dense(matrix: Any) -> np.ndarray:
    import scipy.sparse as sp

    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return np.ascontiguousarray(dense, dtype=np.float32)


class DataAdapter:
    """Serves minibatches of a preprocessed h5ad (``results/<run_id>/preprocessed.h5ad``).

    Parameters
    ----------
    cfg
        Run config; ``cfg.seed`` seeds the per-epoch permutations.
    path, adata
        The preprocessed data, as a file or already in memory (one of the two).
    runtime
        Device and batch size.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        runtime: Runtime,
        path: str | Path | None = None,
        adata: ad.AnnData | None = None,
    ) -> None:
        if (path is None) == (adata is None):
            raise ValueError("DataAdapter needs exactly one of path or adata")
        if adata is None:
            adata = read_preprocessed(path)
        self.cfg = cfg
        self.runtime = runtime
        self.adata = adata
        self.gene_names = [str(g) for g in adata.var_names]
        split = adata.obs[SPLIT_KEY].to_numpy() if SPLIT_KEY in adata.obs else None
        is_val = split == "val" if split is not None else np.zeros(adata.n_obs, dtype=bool)
        x = torch.from_numpy(to_dense(adata.X))
        if not torch.isfinite(x).all():
            raise DataError("preprocessed data holds NaN or Inf values in .X")
        self._x_all = x
        device = torch.device(runtime.device)
        self._train = x[torch.from_numpy(~is_val)].to(device)
        self._val = x[torch.from_numpy(is_val)].to(device)
        self._epoch = 0

    def dataset_info(self) -> dict[str, int]:
        return {
            "n_cells": int(self.adata.n_obs),
            "n_genes": int(self.adata.n_vars),
            "num_hvgs": int(self.adata.n_vars),
            "n_train": int(self._train.shape[0]),
            "n_val": int(self._val.shape[0]),
        }

    def _batches(self, x: torch.Tensor, *, shuffle: bool) -> Iterator[Batch]:
        n = x.shape[0]
        size = self.runtime.batch_size
        if shuffle:
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self._epoch)
            order = torch.randperm(n, generator=gen).to(x.device)
            self._epoch += 1
        else:
            order = torch.arange(n, device=x.device)
        for start in range(0, n, size):
            idx = order[start : start + size]
            if shuffle and idx.numel() < 2 <= n:
                # a lone last cell breaks batch norm; it is seen again next epoch
                continue
            yield Batch(x=x[idx])

    def iter_train_batches(self) -> Iterator[Batch]:
        """Shuffled minibatches of the training split; a new permutation on each call."""
        return self._batches(self._train, shuffle=True)

    def iter_val_batches(self) -> Iterator[Batch]:
        """Minibatches of the validation split, in order."""
        return self._batches(self._val, shuffle=False)

    def iter_all_batches(self) -> Iterator[Batch]:
        """Every cell in file order (for embedding)."""
        return self._batches(self._x_all, shuffle=False)


def read_preprocessed(path: str | Path) -> ad.AnnData:
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"preprocessed data {path} not found; run the preprocess stage first")
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"preprocessed data {path} could not be read: {exc}") from None
