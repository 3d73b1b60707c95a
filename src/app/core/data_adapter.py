"""The only place that turns AnnData into tensors: in-memory splits on the device, minibatches by
a seeded permutation each epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from src.app.config import AnnotationConfig, Config
from src.app.core.distributions import check_counts
from src.app.core.nn import COUNT_LIKELIHOODS
from src.app.core.preprocess import COUNTS_LAYER, SPLIT_KEY
from src.app.errors import DataError
from src.app.machine import Runtime

if TYPE_CHECKING:
    import anndata as ad


@dataclass(frozen=True)
class Batch:
    """One minibatch, built only by :class:`DataAdapter`.

    ``x`` (n, g) is the encoder input (log1p counts for count likelihoods, log-normalised values
    for ``gaussian``); ``target`` (n, g) what the decoder reconstructs (raw counts, or ``x``);
    ``library`` (n, 1) the log of each cell's total counts; ``labels`` (n,) class codes of the
    visible labels, -1 where hidden or unknown.
    """

    x: torch.Tensor
    target: torch.Tensor
    library: torch.Tensor
    labels: torch.Tensor

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """Apply ``fn`` to every tensor; a target shared with ``x`` stays shared (no copy)."""
        x = fn(self.x)
        target = x if self.target is self.x else fn(self.target)
        return Batch(x=x, target=target, library=fn(self.library), labels=fn(self.labels))

    def __getitem__(self, idx: torch.Tensor) -> Batch:
        return self._map(lambda t: t[idx])

    def to(self, device: torch.device | str) -> Batch:
        return self._map(lambda t: t.to(device))

    @property
    def n_cells(self) -> int:
        return int(self.x.shape[0])


def to_dense(matrix: Any) -> np.ndarray:
    import scipy.sparse as sp

    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return np.ascontiguousarray(dense, dtype=np.float32)


def visible_label_mask(labels: pd.Series, *, fraction: float, seed: int) -> np.ndarray:
    """Which labelled cells keep their label: a seeded ``fraction`` of each class, at least one.

    Stratified so rare classes (14 platelets in PBMC 3k) are never left without an example.
    """
    rng = np.random.default_rng(seed)
    visible = np.zeros(len(labels), dtype=bool)
    values = labels.to_numpy()
    known = pd.notna(values)
    for cls in sorted(pd.unique(values[known]), key=str):
        members = np.flatnonzero(known & (values == cls))
        n_keep = max(1, round(fraction * len(members)))
        visible[rng.choice(members, size=n_keep, replace=False)] = True
    return visible


def build_tensors(adata: ad.AnnData, *, likelihood: str, labels: np.ndarray) -> Batch:
    """All cells as one :class:`Batch` on the CPU; raw counts must be whole and non-negative for
    a count likelihood."""
    if likelihood in COUNT_LIKELIHOODS:
        if COUNTS_LAYER not in adata.layers:
            raise DataError(
                f"model.likelihood '{likelihood}' needs raw counts in .layers['{COUNTS_LAYER}']; "
                "run the preprocess stage on raw counts"
            )
        counts = torch.from_numpy(to_dense(adata.layers[COUNTS_LAYER]))
        check_counts(counts, likelihood)
        total = counts.sum(1, keepdim=True)
        if bool((total <= 0).any()):
            raise DataError(f"{int((total <= 0).sum())} cells have no counts; filter them first")
        x, target, library = torch.log1p(counts), counts, torch.log(total)
    else:
        x = torch.from_numpy(to_dense(adata.X))
        if not torch.isfinite(x).all():
            raise DataError("preprocessed data holds NaN or Inf values in .X")
        target, library = x, torch.zeros(x.shape[0], 1)
    return Batch(x=x, target=target, library=library, labels=torch.from_numpy(labels).long())


class DataAdapter:
    """Serves minibatches of a preprocessed h5ad (``results/<run_id>/preprocessed.h5ad``).

    Each split is one set of tensors on the device; an epoch is a seeded permutation of it.

    Parameters
    ----------
    cfg
        Run config: ``seed``, ``model.likelihood`` and the ``annotation`` section.
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
        self.label_categories, codes, self.label_visible = self._labels(
            adata, cfg.annotation, seed=cfg.seed
        )
        self._all = build_tensors(adata, likelihood=cfg.model.likelihood, labels=codes)
        split = adata.obs[SPLIT_KEY].to_numpy() if SPLIT_KEY in adata.obs else None
        is_val = torch.from_numpy(
            split == "val" if split is not None else np.zeros(adata.n_obs, bool)
        )
        device = torch.device(runtime.device)
        self._train = self._all[~is_val].to(device)
        self._val = self._all[is_val].to(device)
        self._epoch = 0

    @staticmethod
    def _labels(
        adata: ad.AnnData, cfg: AnnotationConfig, *, seed: int
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Label categories, visible label codes (-1 hidden/unknown) and the visible mask."""
        n = adata.n_obs
        if cfg.label_key is None:
            return [], np.full(n, -1), np.zeros(n, dtype=bool)
        if cfg.label_key not in adata.obs:
            raise DataError(
                f"annotation.label_key '{cfg.label_key}' is not in the data's .obs; "
                f"available: {sorted(map(str, adata.obs.columns))}; set it to null to train "
                "without the classifier head"
            )
        labels = adata.obs[cfg.label_key]
        known = labels.notna().to_numpy()
        categories = sorted({str(v) for v in labels[known]})
        if len(categories) < 2:
            raise DataError(
                f"annotation.label_key '{cfg.label_key}' has {len(categories)} classes; need >= 2"
            )
        visible = visible_label_mask(labels, fraction=cfg.label_fraction, seed=seed)
        lookup = {c: i for i, c in enumerate(categories)}
        codes = np.array(
            [lookup[str(v)] if vis else -1 for v, vis in zip(labels, visible, strict=True)]
        )
        return categories, codes, visible

    def dataset_info(self) -> dict[str, int]:
        return {
            "n_cells": int(self.adata.n_obs),
            "n_genes": int(self.adata.n_vars),
            "num_hvgs": int(self.adata.n_vars),
            "n_train": self._train.n_cells,
            "n_val": self._val.n_cells,
            "n_labels_visible": int(self.label_visible.sum()),
        }

    def _batches(self, data: Batch, *, shuffle: bool) -> Iterator[Batch]:
        n = data.n_cells
        size = self.runtime.batch_size
        if shuffle:
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self._epoch)
            order = torch.randperm(n, generator=gen).to(data.x.device)
            self._epoch += 1
        else:
            order = torch.arange(n, device=data.x.device)
        for start in range(0, n, size):
            idx = order[start : start + size]
            if shuffle and idx.numel() < 2 <= n:
                # a lone last cell breaks batch norm; it is seen again next epoch
                continue
            yield data[idx]

    def iter_train_batches(self) -> Iterator[Batch]:
        """Shuffled minibatches of the training split; a new permutation on each call."""
        return self._batches(self._train, shuffle=True)

    def iter_val_batches(self) -> Iterator[Batch]:
        """Minibatches of the validation split, in order."""
        return self._batches(self._val, shuffle=False)

    def iter_all_batches(self) -> Iterator[Batch]:
        """Every cell in file order, on the CPU (for embedding)."""
        return self._batches(self._all, shuffle=False)


def read_preprocessed(path: str | Path) -> ad.AnnData:
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"preprocessed data {path} not found; run the preprocess stage first")
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"preprocessed data {path} could not be read: {exc}") from None
