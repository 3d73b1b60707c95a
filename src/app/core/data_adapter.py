"""The only place that turns AnnData into tensors: minibatches by a seeded permutation each epoch.

Only the matrix the likelihood needs is read, and a memory plan made before anything is densified
decides whether it lives on the device, in RAM as CSR or in its file (see ``row_store``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from src.app.config import COUNT_LIKELIHOODS, Config
from src.app.core.data.codes import batch_codes, head_codes
from src.app.core.data.h5ad import StoredMatrix, check_unique, read_annotations
from src.app.core.data.preprocess import COUNTS_LAYER, SPLIT_KEY
from src.app.core.data.row_store import (
    device_memory,
    load_rows,
    plan_memory,
    stored_values,
    to_device,
)
from src.app.errors import DataError
from src.app.machine import Runtime

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

PREPROCESS_HINT = "run the preprocess stage first"


@dataclass(frozen=True)
class Batch:
    """One minibatch, built only by :class:`DataAdapter`.

    ``x`` (n, g) is the encoder input (log1p counts for count likelihoods, log-normalised values
    for ``gaussian``); ``target`` (n, g) what the decoder reconstructs (raw counts, or ``x``);
    ``library`` (n, 1) the log of each cell's total counts; ``labels`` (n,) class codes of the
    visible labels (in training batches also the pseudo-labels), -1 where hidden or unknown;
    ``label_weights`` (n,) each label's weight in the classification loss: 1 for a visible
    label, the certainty of a pseudo-label, 0 for none; ``batch`` (n,) each cell's batch code
    (0 for all cells without ``data.batch_key``).
    """

    x: torch.Tensor
    target: torch.Tensor
    library: torch.Tensor
    labels: torch.Tensor
    label_weights: torch.Tensor
    batch: torch.Tensor

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """Apply ``fn`` to every tensor; a target shared with ``x`` stays shared (no copy)."""
        x = fn(self.x)
        target = x if self.target is self.x else fn(self.target)
        return Batch(
            x=x,
            target=target,
            library=fn(self.library),
            labels=fn(self.labels),
            label_weights=fn(self.label_weights),
            batch=fn(self.batch),
        )

    def __getitem__(self, idx: torch.Tensor) -> Batch:
        return self._map(lambda t: t[idx])

    def to(self, device: torch.device | str) -> Batch:
        return self._map(lambda t: t.to(device))

    @property
    def n_cells(self) -> int:
        return int(self.x.shape[0])


class DataAdapter:
    """Serves minibatches of a preprocessed h5ad (``results/<run_id>/preprocessed.h5ad``).

    Only the matrix the likelihood needs is read (``.X`` for ``gaussian``, the counts layer
    otherwise), and the memory plan decides where it lives.

    Parameters
    ----------
    cfg
        Run config: ``seed``, ``model.likelihood`` and the ``annotation`` section.
    path, adata
        The preprocessed data, as a file or already in memory (one of the two).
    runtime
        Device, batch size and the memory limits.
    batch_categories
        The batches a trained model knows (from its checkpoint), in its code order; a cell of
        another batch is refused. None: the data's own batches (training).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        runtime: Runtime,
        path: str | Path | None = None,
        adata: ad.AnnData | None = None,
        batch_categories: list[str] | None = None,
    ) -> None:
        if (path is None) == (adata is None):
            raise ValueError("DataAdapter needs exactly one of path or adata")
        self.cfg, self.runtime = cfg, runtime
        self.counts = cfg.model.likelihood in COUNT_LIKELIHOODS
        where = f"preprocessed data {path}" if path is not None else "preprocessed data"
        obs, var_names, matrix, stored = _open(path, adata, counts=self.counts, where=where)
        self.obs = obs
        self.gene_names = [str(g) for g in var_names]
        self.n_cells, self.n_genes = len(obs), len(var_names)
        self.label_categories, self.visible_codes = head_codes(obs, cfg)
        self.batch_categories, batch = batch_codes(
            obs, cfg.data.batch_key, known=batch_categories, where=where
        )
        split = obs[SPLIT_KEY].to_numpy() if SPLIT_KEY in obs else np.full(len(obs), "train")
        self._train_rows = np.flatnonzero(split != "val")
        self._val_rows = np.flatnonzero(split == "val")
        if len(self._train_rows) < 2:
            raise DataError(
                f"{where} has {len(self._train_rows)} training cells (obs['{SPLIT_KEY}']); "
                "training needs at least 2; lower preprocess.val_fraction or add cells"
            )
        self.plan = plan_memory(
            n_cells=self.n_cells,
            n_genes=self.n_genes,
            nnz=stored.nnz if stored is not None else stored_values(matrix),
            runtime=runtime,
            vram_bytes=device_memory(runtime),
        )
        what = f"{where} ({'counts layer' if self.counts else '.X'})"
        self._store, totals = load_rows(
            matrix, stored, plan=self.plan, likelihood=cfg.model.likelihood, where=what,
            runtime=runtime,
        )  # fmt: skip
        self.layout = self._store.layout
        log.info("matrix kept %s; plan %s", self.layout, self.plan.describe())
        if self.counts and bool((totals <= 0).any()):
            raise DataError(f"{what}: {int((totals <= 0).sum())} cells have no counts; filter them")
        # the per-cell vectors live on the device whatever the layout (24 bytes a cell), so a
        # batch of a streamed layout copies only its rows and its cells' indices there
        self._device = torch.device(runtime.device)
        library = torch.log(torch.from_numpy(totals.astype(np.float32))).unsqueeze(1)
        self._library = library.to(self._device)
        self._labels = torch.from_numpy(self.visible_codes).long().to(self._device)
        self._weights = (self._labels >= 0).float()
        self._batch_codes = torch.from_numpy(batch).to(self._device)
        self._train_labels, self._train_weights = self._labels, self._weights
        self._epoch = 0

    @property
    def label_visible(self) -> np.ndarray:
        """Which cells' labels the head sees (cells,)."""
        return self.visible_codes >= 0

    def set_pseudo_labels(self, codes: np.ndarray, weights: np.ndarray) -> None:
        """Give the cells without a visible label ``codes`` with ``weights`` (cells,) in the
        training batches from now on; visible labels keep theirs, validation batches see only
        the visible labels (so the validation loss stays comparable across epochs)."""
        hidden = torch.from_numpy(self.visible_codes < 0).to(self._device)
        codes_t = torch.from_numpy(np.asarray(codes)).long().to(self._device)
        weights_t = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(self._device)
        self._train_labels = torch.where(hidden, codes_t, self._labels)
        self._train_weights = torch.where(hidden, weights_t, self._weights)

    def dataset_info(self) -> dict[str, int]:
        return {
            "n_cells": self.n_cells,
            "n_genes": self.n_genes,
            "num_hvgs": self.n_genes,
            "n_train": len(self._train_rows),
            "n_val": len(self._val_rows),
            "n_labels_visible": int(self.label_visible.sum()),
        }

    def encoder_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-gene mean and standard deviation (g,) of the encoder input over every cell, in
        one streamed pass (float64 sums): O(cells x genes) time, O(genes) memory."""
        device = torch.device(self.runtime.device)
        total = torch.zeros(self.n_genes, dtype=torch.float64, device=device)
        squares = torch.zeros(self.n_genes, dtype=torch.float64, device=device)
        for batch in self.iter_all_batches():
            x = batch.x.double()
            total += x.sum(0)
            squares += x.pow(2).sum(0)
        mean = total / max(self.n_cells, 1)
        var = (squares / max(self.n_cells, 1) - mean.pow(2)).clamp(min=0)
        return mean.float(), var.sqrt().float()

    def _batch(self, at: torch.Tensor, values: torch.Tensor, *, train: bool = False) -> Batch:
        """The batch of cells ``at`` (rows of the file, int64 on the store's device) whose
        matrix rows are ``values``; a ``train`` batch carries the pseudo-labels too. Nothing
        here waits for the GPU: copies to it are asynchronous, gathers stay on it."""
        device = self._device
        at, values = to_device(at, device), to_device(values, device)
        labels, weights = (
            (self._train_labels, self._train_weights) if train else (self._labels, self._weights)
        )
        labels, weights = labels.index_select(0, at), weights.index_select(0, at)
        batch = self._batch_codes.index_select(0, at)
        if self.counts:
            x, library = torch.log1p(values), self._library.index_select(0, at)
        else:
            x, library = values, torch.zeros(len(at), 1, device=device)
        return Batch(
            x=x, target=values, library=library, labels=labels, label_weights=weights, batch=batch
        )

    def _batches(self, rows: np.ndarray, *, shuffle: bool) -> Iterator[Batch]:
        gen = None
        if shuffle:
            gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self._epoch)
            self._epoch += 1
        for at, values in self._store.batches(rows, gen=gen, size=self.runtime.batch_size):
            yield self._batch(at, values, train=shuffle)

    def iter_train_batches(self) -> Iterator[Batch]:
        """Shuffled minibatches of the training split; a new permutation on each call."""
        return self._batches(self._train_rows, shuffle=True)

    def iter_val_batches(self) -> Iterator[Batch]:
        """Minibatches of the validation split, in order."""
        return self._batches(self._val_rows, shuffle=False)

    def iter_all_batches(self) -> Iterator[Batch]:
        """Every cell in file order (for embedding)."""
        return self._batches(np.arange(self.n_cells), shuffle=False)


def _open(
    path: str | Path | None, adata: ad.AnnData | None, *, counts: bool, where: str
) -> tuple[pd.DataFrame, Any, Any, StoredMatrix | None]:
    """``(.obs, .var_names, matrix in memory or None, matrix in the file or None)``, checked for
    a matrix that fits .obs and .var and for unique cell and gene names."""
    key = f"layers/{COUNTS_LAYER}" if counts else "X"
    if adata is not None:
        obs, var_names = adata.obs, adata.var_names
        matrix = adata.layers.get(COUNTS_LAYER) if counts else adata.X
        stored, shape = None, None if matrix is None else matrix.shape
    else:
        obs, var_names = read_annotations(path, what="preprocessed data", hint=PREPROCESS_HINT)
        stored = StoredMatrix.open(path, key, what="preprocessed data")
        matrix, shape = None, None if stored is None else stored.shape
    if shape is None:
        raise DataError(
            f"count likelihoods (nb, zinb, poisson) need raw counts in .layers['{COUNTS_LAYER}'] "
            f"of the {where}; run the preprocess stage on raw counts"
        )
    if tuple(shape) != (len(obs), len(var_names)) or 0 in shape:
        raise DataError(
            f"{where}: {key} is {shape[0]} x {shape[1]} but .obs has {len(obs)} cells "
            f"and .var {len(var_names)} genes"
        )
    check_unique(obs.index, what="cell", where=where)
    check_unique(var_names, what="gene", where=where)
    return obs, var_names, matrix, stored
